// CPU check of the implicit-GEMM convolutions' gather (csrc/kernels/conv_gather.cuh): builds, on the
// host and with the kernels' own index functions, the implicit matrices those kernels load tile by
// tile, so tests/test_cuda_conv_gather.py can multiply them out and compare with torch. Test-only.
#include <torch/extension.h>

#include <vector>

#include "conv_gather.cuh"

using accelkernels::ConvArgs;

namespace {

ConvArgs<double> geometry(at::IntArrayRef x, at::IntArrayRef w, at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation, int64_t groups) {
  ConvArgs<double> p{};
  p.n = x[0], p.c = x[1], p.h = x[2], p.w = x[3], p.k = w[0], p.r = w[2], p.s = w[3];
  p.stride_h = stride[0], p.stride_w = stride[1], p.pad_h = padding[0], p.pad_w = padding[1];
  p.dil_h = dilation[0], p.dil_w = dilation[1], p.groups = groups;
  p.p = (p.h + 2 * p.pad_h - p.dil_h * (p.r - 1) - 1) / p.stride_h + 1;
  p.q = (p.w + 2 * p.pad_w - p.dil_w * (p.s - 1) - 1) / p.stride_w + 1;
  return p;
}

// The implicit A matrix of every phase, scattered back to one (groups, result pixels, R·S·channels)
// matrix: row = the result pixel (n, h, w) flattened, column = the (tap, channel) in full order, so
// that it multiplies the weight matrix as stored. Each result pixel must be a row of exactly one phase.
template <bool kInputGrad>
at::Tensor implicit_a(ConvArgs<double> p, const at::Tensor& src) {
  const int64_t red = (kInputGrad ? p.k : p.c) / p.groups;
  const int64_t res_h = kInputGrad ? p.h : p.p, res_w = kInputGrad ? p.w : p.q;
  int64_t(&ss)[4] = kInputGrad ? p.y_stride : p.x_stride;
  for (int d = 0; d < 4; ++d) ss[d] = src.stride(d);
  at::Tensor a = at::zeros({p.groups, p.n * res_h * res_w, p.r * p.s * red}, src.options());
  std::vector<int> seen(p.n * res_h * res_w, 0);
  const double* s_ptr = src.data_ptr<double>();
  auto acc = a.accessor<double, 3>();
  for (int64_t phase_index = 0; phase_index < accelkernels::gemm_phases<kInputGrad>(p); ++phase_index) {
    const auto phase = accelkernels::gemm_phase<kInputGrad>(p, phase_index);
    const int64_t k_total = phase.taps_r * phase.taps_s * red;
    for (int64_t row = 0;; ++row) {
      int64_t n, oh, ow;
      if (!accelkernels::result_pixel(phase, p.n, row, n, oh, ow)) break;
      const int64_t pixel = (n * res_h + oh) * res_w + ow;
      ++seen[pixel];
      const auto gr = accelkernels::gather_row<kInputGrad>(p, phase, row);
      for (int64_t g = 0; g < p.groups; ++g)
        for (int64_t kidx = 0; kidx < k_total; ++kidx) {
          int64_t r, s, c, hh, ww;
          const int64_t kfull = accelkernels::split_reduction(phase, kidx, red, p.s, r, s, c);
          if (accelkernels::gather_tap<kInputGrad>(p, gr, r, s, hh, ww))
            acc[g][pixel][kfull] = s_ptr[gr.offset + hh * ss[2] + ww * ss[3] + (g * red + c) * ss[1]];
        }
    }
  }
  for (size_t i = 0; i < seen.size(); ++i)
    TORCH_CHECK(seen[i] == 1, "result pixel ", i, " is a row of ", seen[i], " phases, expected exactly one");
  return a;
}

}  // namespace

// forward: (groups, N·P·Q, R·S·C/groups) from x; input_grad: (groups, N·H·W, R·S·K/groups) from dy
// (the taps a phase skips stay zero: they are exactly the taps off the stride grid).
at::Tensor implicit_matrix(const at::Tensor& src, at::IntArrayRef x_shape, at::IntArrayRef w_shape,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                           bool input_grad) {
  const auto p = geometry(x_shape, w_shape, stride, padding, dilation, groups);
  return input_grad ? implicit_a<true>(p, src) : implicit_a<false>(p, src);
}

// weight_grad, tap (r, s): the (N·P·Q, C) matrix of x pixels each output pixel reads through it.
at::Tensor weight_grad_gather(const at::Tensor& x, at::IntArrayRef w_shape, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, int64_t r,
                              int64_t s) {
  auto p = geometry(x.sizes(), w_shape, stride, padding, dilation, groups);
  const int64_t pixels = p.n * p.p * p.q;
  at::Tensor b = at::zeros({pixels, p.c}, x.options());
  const double* x_ptr = x.data_ptr<double>();
  auto acc = b.accessor<double, 2>();
  for (int64_t pixel = 0; pixel < pixels; ++pixel) {
    int64_t n, hh, ww;
    if (!accelkernels::weight_grad_source(p, pixel, r, s, n, hh, ww)) continue;
    for (int64_t c = 0; c < p.c; ++c)
      acc[pixel][c] = x_ptr[n * x.stride(0) + c * x.stride(1) + hh * x.stride(2) + ww * x.stride(3)];
  }
  return b;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("implicit_matrix", &implicit_matrix);
  m.def("weight_grad_gather", &weight_grad_gather);
}
