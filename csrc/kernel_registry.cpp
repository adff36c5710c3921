#include "kernel_registry.h"

namespace accelkernels {

const std::vector<BmmKernel>& bmm_kernels() {
  // The SIMT fp32 ladder in order (README: "The CUDA GEMM ladder"), then the tensor-core kernels.
  static const std::vector<BmmKernel> kernels = {
      {"naive", "float32", "5.0", "one thread per output, straight from global memory (coalesced along N)",
       &launch_bmm_naive_f32, nullptr, nullptr, Operands::kStrided},
      {"smem_tiled", "float32", "5.0", "32x32 tiles staged in shared memory, one output per thread",
       &launch_bmm_smem_tiled_f32, nullptr, nullptr, Operands::kStrided},
      {"blocktile_1d", "float32", "5.0", "64x64 tiles, each thread a column of 8 outputs (1-D register blocking)",
       &launch_bmm_blocktile_1d_f32, nullptr, nullptr, Operands::kStrided},
      {"blocktile_2d", "float32", "5.0", "128x128 tiles, each thread an 8x8 block (2-D register blocking)",
       &launch_bmm_blocktile_2d_f32, nullptr, nullptr, Operands::kStrided},
      {"vectorized", "float32", "5.0", "2-D blocking with 16-byte loads and a transposed A tile",
       &launch_bmm_vectorized_f32, nullptr, nullptr, Operands::kStrided},
      {"warptile", "float32", "5.0", "warp tiles of 64x64, double-buffered shared memory (the top SIMT step)",
       &launch_bmm_warptile_f32, nullptr, nullptr, Operands::kStrided},
      {"mma_sync", "float16,bfloat16", "8.0",
       "tensor cores: mma.sync m16n8k16 + ldmatrix, 3-stage cp.async ring, swizzled shared tiles",
       nullptr, &launch_bmm_mma_sync_f16, &launch_bmm_mma_sync_bf16, Operands::kChunks16B},
      {"wgmma", "float16,bfloat16", "9.0a",
       "Hopper: wgmma fed by TMA, 4-stage mbarrier ring, producer/consumer warpgroups, persistent tiles",
       nullptr, &launch_bmm_wgmma_f16, &launch_bmm_wgmma_bf16, Operands::kTmaKMajorSm90},
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
