// CPU check of the implicit-GEMM convolutions' gather (csrc/kernels/conv_gather.cuh): builds, on the
// host and with the kernels' own index functions, the implicit matrices those kernels load tile by
// tile, so tests/test_cuda_conv_gather.py can multiply them out and compare with torch. Test-only.
#include <torch/extension.h>

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

template <bool kInputGrad>
at::Tensor implicit_a(ConvArgs<double> p, const at::Tensor& src) {
  const int64_t red = (kInputGrad ? p.k : p.c) / p.groups;
  const int64_t rows = kInputGrad ? p.n * p.h * p.w : p.n * p.p * p.q, k_total = p.r * p.s * red;
  int64_t(&ss)[4] = kInputGrad ? p.y_stride : p.x_stride;
  for (int d = 0; d < 4; ++d) ss[d] = src.stride(d);
  at::Tensor a = at::zeros({p.groups, rows, k_total}, src.options());
  const double* s_ptr = src.data_ptr<double>();
  auto acc = a.accessor<double, 3>();
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t row = 0; row < rows; ++row) {
      const auto gr = accelkernels::gather_row<kInputGrad>(p, row);
      for (int64_t kidx = 0; kidx < k_total; ++kidx) {
        int64_t r, s, c, hh, ww;
        accelkernels::split_reduction(kidx, red, p.s, r, s, c);
        if (accelkernels::gather_tap<kInputGrad>(p, gr, r, s, hh, ww))
          acc[g][row][kidx] = s_ptr[gr.offset + hh * ss[2] + ww * ss[3] + (g * red + c) * ss[1]];
      }
    }
  return a;
}

}  // namespace

// forward: (groups, N·P·Q, R·S·C/groups) from x; input_grad: (groups, N·H·W, R·S·K/groups) from dy.
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
