// What the host side of the ops (bmm_op.cpp, conv_op.cpp) needs of "the device", in one place, so
// that the same host code serves CUDA tensors on a GPU and CPU tensors on the CPU executor of the
// kernels (built with AK_EMULATED_HOST by accelkernels/emulator/build.py; README: "Running the CUDA
// kernels without a GPU"). On a GPU every helper here is the plain c10::cuda call.
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>
#include <utility>

#ifdef AK_EMULATED_HOST
#include <cuda_runtime.h>
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace accelkernels {
namespace device_host {

#ifdef AK_EMULATED_HOST
#define AK_DISPATCH_KEY CPU
constexpr const char* kTensorKind = "CPU tensor (the CUDA kernels' CPU executor)";
inline bool on_device(const at::Tensor& t) { return t.device().is_cpu(); }
struct DeviceGuard {
  explicit DeviceGuard(c10::Device) {}
};
inline cudaStream_t current_stream() { return nullptr; }
#define AK_CUDA_CHECK(expr)                                                                       \
  do {                                                                                            \
    const cudaError_t ak_err_ = (expr);                                                           \
    TORCH_CHECK(ak_err_ == cudaSuccess, "emulated CUDA call failed: " #expr " returned ", static_cast<int>(ak_err_)); \
  } while (0)
// Outputs: NaN-poisoned, with guard bands on both sides (checked after the launch), exposed to
// the executor's global-memory bounds checks; inputs are exposed read-only. (emu_ops.cpp)
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options, at::MemoryFormat format,
                        const char* name);
void expose_input(const at::Tensor& t, const char* name);
void launch_check();  // guard bands intact; then forgets the tensors of this op
#else
#define AK_DISPATCH_KEY CUDA
constexpr const char* kTensorKind = "CUDA tensor";
inline bool on_device(const at::Tensor& t) { return t.is_cuda(); }
using DeviceGuard = c10::cuda::CUDAGuard;
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream(); }
#define AK_CUDA_CHECK(expr) C10_CUDA_CHECK(expr)
inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options, at::MemoryFormat format,
                               const char*) {
  return at::empty(sizes, options, format);
}
inline void expose_input(const at::Tensor&, const char*) {}
inline void launch_check() { C10_CUDA_KERNEL_LAUNCH_CHECK(); }
#endif

}  // namespace device_host
}  // namespace accelkernels
