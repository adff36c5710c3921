// wgmma_code_present() (declared in kernels/bmm_args.h): whether the code the driver loaded for the
// current device holds the wgmma kernels' bodies. A device variable initialised per architecture
// answers: 1 in sm_90a code, 0 in any other architecture's and in the host's shadow copy. Reading it
// loads the module for this device, so the answer is what would run, not what the arch list asked
// for. The CPU executor has its own definition (csrc/emulator/emu_ops.cpp, from its settings).
#include <cuda_runtime.h>

#include "kernels/bmm_args.h"
#include "kernels/wgmma_gate.cuh"

namespace accelkernels {

#ifdef AK_WGMMA_ENABLED
__device__ int g_wgmma_code_present = 1;
#else
__device__ int g_wgmma_code_present = 0;
#endif

bool wgmma_code_present() {
  constexpr int kDevices = 64;
  static int known[kDevices] = {};  // 0: not asked yet, 1: absent, 2: present (a benign race: same answer)
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (device < kDevices && known[device] != 0) return known[device] == 2;
  int present = 0;
  if (cudaMemcpyFromSymbol(&present, g_wgmma_code_present, sizeof(int)) != cudaSuccess) {
    (void)cudaGetLastError();  // no code for this device at all: absent, and no error left behind
    present = 0;
  }
  if (device < kDevices) known[device] = present ? 2 : 1;
  return present != 0;
}

}  // namespace accelkernels
