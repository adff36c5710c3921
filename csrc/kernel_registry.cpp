#include "kernel_registry.h"

namespace accelkernels {

const std::vector<BmmKernel>& bmm_kernels() {
  // The SIMT fp32 ladder in order (csrc/README.md: "The CUDA GEMM ladder"), then the tensor-core kernels.
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
      {"wgmma_v2", "float16,bfloat16", "9.0a",
       "Hopper: 128x256 tiles, one wgmma group in flight, setmaxnreg 40/232, stmatrix + TMA-store epilogue",
       nullptr, &launch_bmm_wgmma_v2_f16, &launch_bmm_wgmma_v2_bf16, Operands::kTmaKMajorSm90TmaStore},
      {"wgmma_cluster", "float16,bfloat16", "9.0a",
       "Hopper: wgmma_v2 in 2-block clusters along M, the B tile multicast by TMA to both, cluster-wide stage release",
       nullptr, &launch_bmm_wgmma_cluster_f16, &launch_bmm_wgmma_cluster_bf16, Operands::kTmaKMajorSm90TmaStore},
  };
  return kernels;
}

const BmmKernel* find_bmm_kernel(std::string_view name) {
  for (const auto& k : bmm_kernels()) {
    if (name == k.name) return &k;
  }
  return nullptr;
}

const std::vector<ConvKernel>& conv_kernels() {
  using P = ConvPass;
  static const std::vector<ConvKernel> kernels = {
      {"direct", P::kForward, "float32,float16,bfloat16", "5.0",
       "SIMT: 8x16 pixels x 8 channels per block, input patch and filters staged in shared memory",
       &launch_conv2d_direct<float>, &launch_conv2d_direct<__half>, &launch_conv2d_direct<__nv_bfloat16>, false},
      {"depthwise", P::kForward, "float32,float16,bfloat16", "5.0",
       "depthwise (groups = C): one thread per output, channels fastest on channels_last",
       &launch_conv2d_depthwise<float>, &launch_conv2d_depthwise<__half>, &launch_conv2d_depthwise<__nv_bfloat16>,
       false},
      {"implicit_gemm", P::kForward, "float16,bfloat16", "8.0",
       "tensor cores: implicit GEMM, im2col gathered by cp.async into the mma.sync GEMM's tiles (NHWC)",
       nullptr, &launch_conv2d_implicit_gemm<__half>, &launch_conv2d_implicit_gemm<__nv_bfloat16>, true},
      {"wgmma", P::kForward, "float16,bfloat16", "9.0a",
       "Hopper: implicit GEMM on wgmma_v2's machinery, x fetched by im2col TMA, the filter by tiled TMA (NHWC)",
       nullptr, &launch_conv2d_wgmma<__half>, &launch_conv2d_wgmma<__nv_bfloat16>, true},
      {"direct", P::kInputGrad, "float32,float16,bfloat16", "5.0",
       "SIMT: one thread per input element, summing the taps that reach it",
       &launch_conv2d_direct_input_grad<float>, &launch_conv2d_direct_input_grad<__half>,
       &launch_conv2d_direct_input_grad<__nv_bfloat16>, false},
      {"implicit_gemm", P::kInputGrad, "float16,bfloat16", "8.0",
       "tensor cores: the transposed implicit GEMM (dy gathered where the stride grid allows)",
       nullptr, &launch_conv2d_implicit_gemm_input_grad<__half>,
       &launch_conv2d_implicit_gemm_input_grad<__nv_bfloat16>, true},
      {"wgmma", P::kInputGrad, "float16,bfloat16", "9.0a",
       "Hopper: the transposed implicit GEMM per stride phase on wgmma, dy fetched by im2col TMA (NHWC)",
       nullptr, &launch_conv2d_wgmma_input_grad<__half>, &launch_conv2d_wgmma_input_grad<__nv_bfloat16>, true},
      {"direct", P::kWeightGrad, "float32,float16,bfloat16", "5.0",
       "SIMT: one block per weight element reducing over N*P*Q (deterministic)",
       &launch_conv2d_direct_weight_grad<float>, &launch_conv2d_direct_weight_grad<__half>,
       &launch_conv2d_direct_weight_grad<__nv_bfloat16>, false},
      {"implicit_gemm", P::kWeightGrad, "float16,bfloat16", "8.0",
       "tensor cores: dy^T x im2col(x) per tap, split-K over N*P*Q, fixed-order sum of the slices",
       nullptr, &launch_conv2d_implicit_gemm_weight_grad<__half>,
       &launch_conv2d_implicit_gemm_weight_grad<__nv_bfloat16>, true},
      {"wgmma", P::kWeightGrad, "float16,bfloat16", "9.0a",
       "Hopper: dy^T x im2col(x) on wgmma with MN-major tiles (TMA, im2col TMA), split-K, fixed-order sum",
       nullptr, &launch_conv2d_wgmma_weight_grad<__half>, &launch_conv2d_wgmma_weight_grad<__nv_bfloat16>, true},
  };
  return kernels;
}

const ConvKernel* find_conv_kernel(ConvPass pass, std::string_view name) {
  for (const auto& k : conv_kernels()) {
    if (k.pass == pass && name == k.name) return &k;
  }
  return nullptr;
}

const char* conv_op_name(ConvPass pass) {
  switch (pass) {
    case ConvPass::kForward:
      return "cuda_conv2d";
    case ConvPass::kInputGrad:
      return "cuda_conv2d_input_grad";
    default:
      return "cuda_conv2d_weight_grad";
  }
}

}  // namespace accelkernels
