#include "kernel_registry.h"

namespace accelkernels {

const std::vector<BmmKernel>& bmm_kernels() {
  static const std::vector<BmmKernel> kernels = {
      {"smem_tiled", "float32", "5.0", "32x32 tiles staged in shared memory, one output per thread",
       &launch_bmm_smem_tiled_f32},
  };
  return kernels;
}

const BmmKernel* find_bmm_kernel(std::string_view name) {
  for (const auto& k : bmm_kernels()) {
    if (name == k.name) return &k;
  }
  return nullptr;
}

}  // namespace accelkernels
