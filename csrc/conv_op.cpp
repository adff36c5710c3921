// Host side of the CUDA conv2d ops (accelkernels::cuda_conv2d, cuda_conv2d_input_grad,
// cuda_conv2d_weight_grad): argument checks, operand preparation for the tensor-core kernels,
// output allocation in the requested memory format, device guard, current stream, launch check.
// The schemas are defined in Python (accelkernels/ops/cuda_kernels.py); which kernel runs is the
// caller's choice (accelkernels/backends/cuda_conv.py picks one per problem).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <string>

#include "device_host.h"
#include "kernel_registry.h"
#include "kernels/conv_wgmma_views.h"

namespace accelkernels {
namespace {

namespace dh = device_host;

constexpr int64_t kMaxGrid = 65535;  // gridDim.y / gridDim.z limit (the kernels' group / tap axes)

// The dims and arguments of a problem, before the tensors (and so the element type) are known.
using Geometry = ConvArgs<void>;

Activation parse_activation(const char* op, c10::string_view name) {
  if (name == "none") return Activation::kNone;
  if (name == "relu") return Activation::kRelu;
  if (name == "gelu") return Activation::kGelu;
  if (name == "silu") return Activation::kSilu;
  TORCH_CHECK_VALUE(false, "accelkernels::", op, ": activation must be none, relu, gelu or silu, got '",
                    std::string(name), "'");
}

// An attribute of the current device (ATen/cuda/CUDAContext.h would pull in cuSPARSE's headers).
int device_attribute(cudaDeviceAttr attr) {
  int device = 0, value = 0;
  AK_CUDA_CHECK(cudaGetDevice(&device));
  AK_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, device));
  return value;
}

void check_tensor(const char* op, const at::Tensor& t, const char* name, const at::Tensor& first) {
  TORCH_CHECK(dh::on_device(t), "accelkernels::", op, ": ", name, " must be a ", dh::kTensorKind, ", got ", t.device());
  TORCH_CHECK(t.device() == first.device(), "accelkernels::", op, ": ", name, " is on ", t.device(), " but ",
              "the first tensor is on ", first.device());
  TORCH_CHECK(t.scalar_type() == first.scalar_type(), "accelkernels::", op, ": ", name, " has dtype ",
              t.scalar_type(), " but the first tensor has ", first.scalar_type());
  TORCH_CHECK(t.dim() == 4, "accelkernels::", op, ": ", name, " must be 4-D, got shape ", t.sizes());
}

void check_pair(const char* op, at::IntArrayRef v, const char* name, int64_t minimum) {
  TORCH_CHECK_VALUE(v.size() == 2 && v[0] >= minimum && v[1] >= minimum, "accelkernels::", op, ": ", name,
                    " must be two integers >= ", minimum, ", got ", v);
}

// The geometry of the forward problem the pass belongs to, checked for consistency.
void fill_geometry(const char* op, Geometry& g, at::IntArrayRef x, at::IntArrayRef w, at::IntArrayRef y,
                   at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_pair(op, stride, "stride", 1);
  check_pair(op, padding, "padding", 0);
  check_pair(op, dilation, "dilation", 1);
  TORCH_CHECK_VALUE(groups >= 1 && x[1] % groups == 0 && w[0] % groups == 0 && w[1] * groups == x[1],
                    "accelkernels::", op, ": input (", x, ") and weight (", w, ") do not fit groups=", groups);
  g.n = x[0], g.c = x[1], g.h = x[2], g.w = x[3], g.k = w[0], g.r = w[2], g.s = w[3];
  g.stride_h = stride[0], g.stride_w = stride[1], g.pad_h = padding[0], g.pad_w = padding[1];
  g.dil_h = dilation[0], g.dil_w = dilation[1], g.groups = groups;
  // The padded input's extent past the filter's first position (negative: the filter does not fit;
  // checked before dividing, as C++ division rounds -1 / 2 up to 0).
  const int64_t span_h = g.h + 2 * g.pad_h - g.dil_h * (g.r - 1) - 1;
  const int64_t span_w = g.w + 2 * g.pad_w - g.dil_w * (g.s - 1) - 1;
  TORCH_CHECK_VALUE(span_h >= 0 && span_w >= 0, "accelkernels::", op, ": the filter (", w, ", dilation ", dilation,
                    ") does not fit the padded input (", x, ", padding ", padding, ")");
  g.p = span_h / g.stride_h + 1;
  g.q = span_w / g.stride_w + 1;
  if (!y.empty())
    TORCH_CHECK_VALUE(y[0] == g.n && y[1] == g.k && y[2] == g.p && y[3] == g.q, "accelkernels::", op,
                      ": grad_output must have shape [", g.n, ", ", g.k, ", ", g.p, ", ", g.q, "], got ", y);
  TORCH_CHECK_VALUE(groups * g.r * g.s <= kMaxGrid && groups * g.stride_h * g.stride_w <= kMaxGrid &&
                        (g.k / groups + 7) / 8 * groups <= kMaxGrid,
                    "accelkernels::", op, ": groups x filter taps (", groups * g.r * g.s, "), groups x stride phases (",
                    groups * g.stride_h * g.stride_w, ") or output channel blocks exceed the grid limit of ", kMaxGrid);
}

template <typename T, typename TorchT>
ConvArgs<T> make_args(const Geometry& g, const at::Tensor& x, const at::Tensor& w, const at::Tensor& y) {
  ConvArgs<T> a{};
  auto ptr = [](const at::Tensor& t) { return reinterpret_cast<T*>(t.data_ptr<TorchT>()); };
  a.x = ptr(x), a.weight = ptr(w), a.y = ptr(y);
  a.n = g.n, a.c = g.c, a.h = g.h, a.w = g.w, a.k = g.k, a.p = g.p, a.q = g.q, a.r = g.r, a.s = g.s;
  a.stride_h = g.stride_h, a.stride_w = g.stride_w, a.pad_h = g.pad_h, a.pad_w = g.pad_w;
  a.dil_h = g.dil_h, a.dil_w = g.dil_w, a.groups = g.groups;
  // A size-1 dim is only ever indexed at 0, so its stride is free: give it the channels_last-packed
  // value, so that a tensor torch calls channels_last (whose size-1 dims keep whatever strides they
  // had) also passes the tensor-core kernels' exact-layout checks.
  auto strides = [](const at::Tensor& t, int64_t (&out)[4]) {
    const int64_t packed[4] = {t.size(1) * t.size(2) * t.size(3), 1, t.size(3) * t.size(1), t.size(1)};
    for (int d = 0; d < 4; ++d) out[d] = t.size(d) == 1 ? packed[d] : t.stride(d);
  };
  strides(x, a.x_stride);
  strides(w, a.w_stride);
  strides(y, a.y_stride);
  a.activation = Activation::kNone;
  return a;
}

// The wgmma/TMA convolution (sm_90a only; it writes y through TMA stores of a dense channels_last tensor).
bool is_hopper_kernel(const ConvKernel& k) { return std::string(k.min_arch) == "9.0a"; }

const ConvKernel& find_kernel(ConvPass pass, c10::string_view name, at::ScalarType dtype) {
  const char* op = conv_op_name(pass);
  const ConvKernel* k = find_conv_kernel(pass, name);
  TORCH_CHECK_VALUE(k != nullptr, "accelkernels::", op, ": no kernel named '", std::string(name),
                    "' (accelkernels._C.kernels() lists them with their op)");
  const bool served = (dtype == at::kFloat && k->launch_f32 != nullptr) ||
                      (dtype == at::kHalf && k->launch_f16 != nullptr) ||
                      (dtype == at::kBFloat16 && k->launch_bf16 != nullptr);
  TORCH_CHECK_TYPE(served, "accelkernels::", op, ": kernel '", k->name, "' takes ", k->dtypes, ", got ", dtype);
  if (k->tensor_cores) {
    const int major = device_attribute(cudaDevAttrComputeCapabilityMajor);
    TORCH_CHECK(major >= 8, "accelkernels::", op, ": kernel '", k->name, "' needs compute capability 8.0+ ",
                "(mma.sync with bf16, cp.async), this GPU is ", major, ".",
                device_attribute(cudaDevAttrComputeCapabilityMinor));
  }
  if (is_hopper_kernel(*k)) {
    const int major = device_attribute(cudaDevAttrComputeCapabilityMajor);
    const int minor = device_attribute(cudaDevAttrComputeCapabilityMinor);
    TORCH_CHECK(major == 9 && minor == 0, "accelkernels::", op, ": kernel '", k->name, "' runs on compute "
                "capability 9.0 (sm_90a) only, this GPU is ", major, ".", minor);
    TORCH_CHECK(wgmma_code_present(), "accelkernels::", op, ": kernel '", k->name, "' needs sm_90a code, and this "
                "build has none for this GPU: rebuild with TORCH_CUDA_ARCH_LIST=9.0a (or 8.0;9.0a), or use the "
                "'implicit_gemm' kernel");
  }
  return *k;
}

// The tensor-core kernels gather 16-byte chunks from channels_last operands: other layouts are
// converted here (a copy the benchmark counts; channels_last inputs pass through untouched).
at::Tensor channels_last(const at::Tensor& t) {
  auto out = t.contiguous(at::MemoryFormat::ChannelsLast);
  if (reinterpret_cast<uintptr_t>(out.data_ptr()) % 16 != 0) out = out.clone(at::MemoryFormat::ChannelsLast);
  return out;
}

template <typename T>
void run(const ConvKernel& kernel, ConvArgs<T> args, cudaStream_t stream) {
  const char* op = conv_op_name(kernel.pass);
  if (kernel.tensor_cores) {
    const char* why = is_hopper_kernel(kernel) ? conv_wgmma_unsupported_reason(args, kernel.pass)
                                               : conv_implicit_gemm_unsupported_reason(args, kernel.pass);
    TORCH_CHECK_VALUE(why == nullptr, "accelkernels::", op, ": kernel '", kernel.name, "' cannot serve this ",
                      "problem: ", why, " (C=", args.c, ", K=", args.k, ", groups=", args.groups, ")");
  }
  if constexpr (std::is_same_v<T, float>) kernel.launch_f32(args, stream);
  if constexpr (std::is_same_v<T, __half>) kernel.launch_f16(args, stream);
  if constexpr (std::is_same_v<T, __nv_bfloat16>) kernel.launch_bf16(args, stream);
  dh::launch_check();
}

// Dispatch on dtype: `fill` completes the args (bias, activation, workspace) per element type.
template <typename Fill>
void run_for_dtype(const ConvKernel& kernel, const Geometry& g, const at::Tensor& x, const at::Tensor& w,
                   const at::Tensor& y, Fill fill) {
  dh::expose_input(x, "x");  // (the pass's output is already exposed, writable: dh::empty_output)
  dh::expose_input(w, "weight");
  dh::expose_input(y, "y");
  const cudaStream_t stream = dh::current_stream();
  switch (x.scalar_type()) {
    case at::kHalf: {
      auto args = make_args<__half, at::Half>(g, x, w, y);
      fill(args);
      run<__half>(kernel, args, stream);
      break;
    }
    case at::kBFloat16: {
      auto args = make_args<__nv_bfloat16, at::BFloat16>(g, x, w, y);
      fill(args);
      run<__nv_bfloat16>(kernel, args, stream);
      break;
    }
    default: {
      auto args = make_args<float, float>(g, x, w, y);
      fill(args);
      run<float>(kernel, args, stream);
    }
  }
}

// The two tensors a pass reads: CUDA, 4-D, on one device, one dtype the kernels take.
void check_operands(const char* op, const at::Tensor& first, const char* first_name, const at::Tensor& second,
                    const char* second_name) {
  check_tensor(op, first, first_name, first);
  check_tensor(op, second, second_name, first);
  const auto d = first.scalar_type();
  TORCH_CHECK_TYPE(d == at::kFloat || d == at::kHalf || d == at::kBFloat16, "accelkernels::", op,
                   ": dtype must be float32, float16 or bfloat16, got ", d);
}

void check_size(const char* op, at::IntArrayRef size, const char* name) {
  TORCH_CHECK_VALUE(size.size() == 4, "accelkernels::", op, ": ", name, " must have 4 entries, got ", size);
}

at::MemoryFormat format_of(bool channels_last_out) {
  return channels_last_out ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

at::Tensor cuda_conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       c10::string_view activation, c10::string_view kernel_name, bool channels_last_out) {
  const char* op = "cuda_conv2d";
  check_operands(op, input, "input", weight, "weight");
  Geometry g{};
  fill_geometry(op, g, input.sizes(), weight.sizes(), {}, stride, padding, dilation, groups);
  if (bias.has_value()) {
    TORCH_CHECK(dh::on_device(*bias) && bias->device() == input.device() && bias->scalar_type() == input.scalar_type(),
                "accelkernels::", op, ": bias must be a ", input.scalar_type(), " tensor on ", input.device());
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == g.k, "accelkernels::", op, ": bias must have shape (",
                      g.k, "), got ", bias->sizes());
  }
  const Activation act = parse_activation(op, activation);
  const dh::DeviceGuard guard(input.device());
  const ConvKernel& kernel = find_kernel(ConvPass::kForward, kernel_name, input.scalar_type());
  if (std::string(kernel.name) == "depthwise")
    TORCH_CHECK_VALUE(groups == g.c && g.k % g.c == 0, "accelkernels::", op, ": kernel 'depthwise' needs groups == "
                      "input channels (", g.c, "), got groups=", groups);

  // The wgmma kernel stores y as a dense (N*P*Q, K) matrix: channels_last, converted after if asked.
  const bool nhwc_y = is_hopper_kernel(kernel) || channels_last_out;
  at::Tensor y = dh::empty_output({g.n, g.k, g.p, g.q}, input.options(), format_of(nhwc_y), "y");
  if (y.numel() == 0) return y.contiguous(format_of(channels_last_out));
  const at::Tensor x = kernel.tensor_cores ? channels_last(input) : input;
  const at::Tensor w = kernel.tensor_cores ? channels_last(weight) : weight;
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  if (b.defined()) dh::expose_input(b, "bias");
  run_for_dtype(kernel, g, x, w, y, [&](auto& args) {
    using T = std::remove_pointer_t<decltype(args.x)>;
    args.bias = b.defined() ? reinterpret_cast<const T*>(b.data_ptr()) : nullptr;
    args.activation = act;
  });
  return nhwc_y == channels_last_out ? y : y.contiguous(format_of(channels_last_out));
}

at::Tensor cuda_conv2d_input_grad(const at::Tensor& grad_output, const at::Tensor& weight, at::IntArrayRef input_size,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups, c10::string_view kernel_name, bool channels_last_out) {
  const char* op = "cuda_conv2d_input_grad";
  check_operands(op, grad_output, "grad_output", weight, "weight");
  check_size(op, input_size, "input_size");
  Geometry g{};
  fill_geometry(op, g, input_size, weight.sizes(), grad_output.sizes(), stride, padding, dilation, groups);
  const dh::DeviceGuard guard(grad_output.device());
  const ConvKernel& kernel = find_kernel(ConvPass::kInputGrad, kernel_name, grad_output.scalar_type());

  // The wgmma kernel writes dx as a dense (N*H*W, C) matrix: channels_last, converted after if asked.
  const bool nhwc_dx = is_hopper_kernel(kernel) || channels_last_out;
  at::Tensor dx = dh::empty_output(input_size, grad_output.options(), format_of(nhwc_dx), "dx");
  if (dx.numel() == 0) return dx.contiguous(format_of(channels_last_out));
  if (grad_output.numel() == 0) return dx.zero_().contiguous(format_of(channels_last_out));
  at::Tensor dy = grad_output, w = weight;
  if (kernel.tensor_cores) {
    dy = channels_last(grad_output);
    // Wt[c, kk, r, s] = weight[g·KG + kk, c - g·CG, r, s], stored (C, R, S, KG): the transposed
    // problem's (columns, R, S, reduce-channels) matrix. A copy of the (small) weight.
    const int64_t kg = g.k / groups, cg = g.c / groups;
    w = weight.reshape({groups, kg, cg, g.r, g.s}).permute({0, 2, 3, 4, 1}).contiguous()
            .view({g.c, g.r, g.s, kg}).permute({0, 3, 1, 2});
  }
  run_for_dtype(kernel, g, dx, w, dy, [](auto&) {});
  return nhwc_dx == channels_last_out ? dx : dx.contiguous(format_of(channels_last_out));
}

// Split-K slices for the tensor-core weight gradient: enough blocks for two waves of the GPU,
// each slice at least kMinPixelsPerSplit pixels (8 of the kernel's 64-pixel steps). Untuned: the
// same starting point as the Triton wgrad (no GPU has timed either yet).
constexpr int64_t kMinPixelsPerSplit = 512;

// The wgmma kernel (conv2d_wgmma_weight_grad.cu) runs persistent tiles of 128 output channels x 4 (tap,
// 64-channel) blocks, one launch per group (one after the other): enough slices for one tile per SM in
// each launch. Untuned as well.
int64_t weight_grad_splits(const Geometry& g, bool hopper) {
  const int64_t kg = g.k / g.groups, cg = g.c / g.groups, pixels = g.n * g.p * g.q;
  const int64_t blocks = hopper ? ((kg + 127) / 128) * ((g.r * g.s * ((cg + 63) / 64) + 3) / 4)
                                : ((kg + 127) / 128) * ((cg + 127) / 128) * g.groups * g.r * g.s;
  const int64_t waves = hopper ? 1 : 2;
  const int64_t wanted = (waves * device_attribute(cudaDevAttrMultiProcessorCount) + blocks - 1) / blocks;
  return std::clamp<int64_t>(std::min(wanted, pixels / kMinPixelsPerSplit), 1, kMaxGrid);
}

at::Tensor cuda_conv2d_weight_grad(const at::Tensor& grad_output, const at::Tensor& input,
                                   at::IntArrayRef weight_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, int64_t groups, c10::string_view kernel_name,
                                   bool channels_last_out) {
  const char* op = "cuda_conv2d_weight_grad";
  check_operands(op, grad_output, "grad_output", input, "input");
  check_size(op, weight_size, "weight_size");
  Geometry g{};
  fill_geometry(op, g, input.sizes(), weight_size, grad_output.sizes(), stride, padding, dilation, groups);
  const dh::DeviceGuard guard(grad_output.device());
  const ConvKernel& kernel = find_kernel(ConvPass::kWeightGrad, kernel_name, grad_output.scalar_type());

  at::Tensor dw = dh::empty_output(weight_size, grad_output.options(), format_of(channels_last_out), "dw");
  if (dw.numel() == 0) return dw;
  if (grad_output.numel() == 0) return dw.zero_();
  at::Tensor dy = grad_output, x = input, workspace;
  int64_t splits = 1;
  if (kernel.tensor_cores) {
    dy = channels_last(grad_output);
    x = channels_last(input);
    splits = weight_grad_splits(g, is_hopper_kernel(kernel));
    workspace = dh::empty_output({splits * dw.numel()}, grad_output.options().dtype(at::kFloat), at::MemoryFormat::Contiguous,
                                  "workspace");
  }
  run_for_dtype(kernel, g, x, dw, dy, [&](auto& args) {
    args.workspace = workspace.defined() ? workspace.data_ptr<float>() : nullptr;
    args.splits = splits;
  });
  return dw;
}

}  // namespace

TORCH_LIBRARY_IMPL(accelkernels, AK_DISPATCH_KEY, m) {
  m.impl("cuda_conv2d", &cuda_conv2d);
  m.impl("cuda_conv2d_input_grad", &cuda_conv2d_input_grad);
  m.impl("cuda_conv2d_weight_grad", &cuda_conv2d_weight_grad);
}

}  // namespace accelkernels
