// Host side of accelkernels::cuda_bmm: argument checks, device guard, current stream, launch check.
// The schema is defined in Python (accelkernels/ops/cuda_kernels.py); this file adds the CUDA kernel
// (and, compiled with AK_EMULATED_HOST, the CPU executor's: device_host.h).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>

#include "build_meta.h"
#include "device_host.h"
#include "kernel_registry.h"

namespace accelkernels {
namespace {

namespace dh = device_host;

Activation parse_activation(c10::string_view name) {
  if (name == "none") return Activation::kNone;
  if (name == "relu") return Activation::kRelu;
  if (name == "gelu") return Activation::kGelu;
  if (name == "silu") return Activation::kSilu;
  TORCH_CHECK_VALUE(false, "accelkernels::cuda_bmm: activation must be none, relu, gelu or silu, got '",
                    std::string(name), "'");
}

void check_operand(const at::Tensor& t, const char* name, const at::Tensor& a) {
  TORCH_CHECK(dh::on_device(t), "accelkernels::cuda_bmm: ", name, " must be a ", dh::kTensorKind, ", got ", t.device());
  TORCH_CHECK(t.device() == a.device(), "accelkernels::cuda_bmm: ", name, " is on ", t.device(), " but a is on ",
              a.device());
  TORCH_CHECK(t.scalar_type() == a.scalar_type(), "accelkernels::cuda_bmm: ", name, " has dtype ", t.scalar_type(),
              " but a has ", a.scalar_type());
}

// The kernel's view of the problem; T is the CUDA element type, TorchT torch's spelling of it.
template <typename T, typename TorchT>
BmmArgs<T> make_args(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias, at::Tensor& c,
                     c10::string_view activation) {
  BmmArgs<T> args{};
  args.a = reinterpret_cast<const T*>(a.const_data_ptr<TorchT>());
  args.b = reinterpret_cast<const T*>(b.const_data_ptr<TorchT>());
  args.bias = bias.defined() ? reinterpret_cast<const T*>(bias.const_data_ptr<TorchT>()) : nullptr;
  args.c = reinterpret_cast<T*>(c.mutable_data_ptr<TorchT>());
  args.batch = a.size(0);
  args.m = a.size(1);
  args.n = b.size(2);
  args.k = a.size(2);
  args.a_stride_batch = a.stride(0);
  args.a_stride_m = a.stride(1);
  args.a_stride_k = a.stride(2);
  args.b_stride_batch = b.stride(0);
  args.b_stride_k = b.stride(1);
  args.b_stride_n = b.stride(2);
  args.activation = parse_activation(activation);
  return args;
}

// K = 0: every dot product is an empty sum, so C = act(bias) (act(0) = 0 without a bias) for every
// kernel. No kernel runs: a zero-width operand has no TMA descriptor to encode, and a ring would wait
// for bytes that never come. Computed in float32 and rounded once, as the kernels' epilogue does.
at::Tensor empty_sum(at::Tensor& c, const std::optional<at::Tensor>& bias, c10::string_view activation) {
  if (!bias.has_value()) return c.zero_();  // relu, gelu and silu all map 0 to 0
  at::Tensor z = bias->to(at::kFloat);  // the activation on the bias itself, then broadcast over the rows
  switch (parse_activation(activation)) {
    case Activation::kRelu: z = at::relu(z); break;
    case Activation::kGelu: z = at::gelu(z); break;
    case Activation::kSilu: z = at::silu(z); break;
    default: break;
  }
  return c.copy_(z.view({1, 1, c.size(2)}).expand(c.sizes()));
}

template <typename T>
void launch(const BmmKernel& kernel, void (*launcher)(const BmmArgs<T>&, cudaStream_t), const BmmArgs<T>& args,
            cudaStream_t stream) {
  const char* why = nullptr;
  if (kernel.operands == Operands::kChunks16B) why = mma_sync_unsupported_reason(args);
  const bool hopper = kernel.operands == Operands::kTmaKMajorSm90 || kernel.operands == Operands::kTmaKMajorSm90TmaStore;
  if (hopper) {
    int device = 0, major = 0, minor = 0;
    AK_CUDA_CHECK(cudaGetDevice(&device));
    AK_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    AK_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    TORCH_CHECK(major == 9 && minor == 0, "accelkernels::cuda_bmm: kernel '", kernel.name, "' runs on compute "
                "capability 9.0 (sm_90a) only, this GPU is ", major, ".", minor);
    TORCH_CHECK(wgmma_code_present(), "accelkernels::cuda_bmm: kernel '", kernel.name, "' needs sm_90a code, and "
                "this build has none for this GPU (built for ", AK_STRINGIZE(ACCELKERNELS_ARCH_LIST), "): its "
                "stub would return the output's memory as it found it; rebuild with TORCH_CUDA_ARCH_LIST=9.0a "
                "(or 8.0;9.0a), or use the 'mma_sync' kernel");
    why = kernel.operands == Operands::kTmaKMajorSm90 ? wgmma_unsupported_reason(args)
                                                      : wgmma_v2_unsupported_reason(args);
  }
  TORCH_CHECK_VALUE(why == nullptr, "accelkernels::cuda_bmm: kernel '", kernel.name, "' cannot read these operands: ",
                    why, " (a strides ", args.a_stride_batch, ",", args.a_stride_m, ",", args.a_stride_k,
                    "; b strides ", args.b_stride_batch, ",", args.b_stride_k, ",", args.b_stride_n, ")");
  launcher(args, stream);
}

at::Tensor cuda_bmm(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& bias,
                    c10::string_view activation, c10::string_view kernel) {
  check_operand(a, "a", a);
  check_operand(b, "b", b);
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3, "accelkernels::cuda_bmm: a and b must be 3-D (batch, M, K) and "
              "(batch, K, N), got ", a.sizes(), " and ", b.sizes());
  TORCH_CHECK(a.size(0) == b.size(0) && a.size(2) == b.size(1), "accelkernels::cuda_bmm: shapes ", a.sizes(),
              " and ", b.sizes(), " do not multiply");
  const int64_t batch = a.size(0), m = a.size(1), k = a.size(2), n = b.size(2);
  if (bias.has_value()) {
    check_operand(*bias, "bias", a);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == n, "accelkernels::cuda_bmm: bias must have shape (", n,
                "), got ", bias->sizes());
  }
  const BmmKernel* chosen = find_bmm_kernel(kernel);
  TORCH_CHECK_VALUE(chosen != nullptr, "accelkernels::cuda_bmm: no kernel named '", std::string(kernel),
                    "' (accelkernels._C.kernels() lists them)");
  const auto dtype = a.scalar_type();
  const bool served = (dtype == at::kFloat && chosen->launch_f32 != nullptr) ||
                      (dtype == at::kHalf && chosen->launch_f16 != nullptr) ||
                      (dtype == at::kBFloat16 && chosen->launch_bf16 != nullptr);
  TORCH_CHECK_TYPE(served, "accelkernels::cuda_bmm: kernel '", chosen->name, "' takes ", chosen->dtypes, ", got ",
                   dtype);
  TORCH_CHECK((n + 31) / 32 <= kMaxGridY, "accelkernels::cuda_bmm: N=", n, " exceeds the grid limit of this kernel");

  const dh::DeviceGuard guard(a.device());
  at::Tensor c = dh::empty_output({batch, m, n}, a.options(), at::MemoryFormat::Contiguous, "c");
  if (c.numel() == 0) return c;
  if (k == 0) return empty_sum(c, bias, activation);
  // A contiguous copy of the (tiny) bias lets the kernel index it directly.
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();
  dh::expose_input(a, "a");
  dh::expose_input(b, "b");
  if (bias_c.defined()) dh::expose_input(bias_c, "bias");
  const cudaStream_t stream = dh::current_stream();
  switch (dtype) {
    case at::kHalf:
      launch(*chosen, chosen->launch_f16, make_args<__half, at::Half>(a, b, bias_c, c, activation), stream);
      break;
    case at::kBFloat16:
      launch(*chosen, chosen->launch_bf16, make_args<__nv_bfloat16, at::BFloat16>(a, b, bias_c, c, activation),
             stream);
      break;
    default:
      launch(*chosen, chosen->launch_f32, make_args<float, float>(a, b, bias_c, c, activation), stream);
  }
  dh::launch_check();
  return c;
}

}  // namespace

TORCH_LIBRARY_IMPL(accelkernels, AK_DISPATCH_KEY, m) { m.impl("cuda_bmm", &cuda_bmm); }

}  // namespace accelkernels
