// The pybind11 module accelkernels._C: build metadata and the kernel registry.
// Importing it also runs the TORCH_LIBRARY_IMPL blocks of the other translation units, which give
// the accelkernels ops (schemas defined in Python) their CUDA implementations.
#include <torch/extension.h>

#include <cuda_runtime_api.h>

#include "kernel_registry.h"
#include "registry_listing.h"

// setup.py / the first-use build pass these as bare tokens; stringize them here.
#define AK_STRINGIZE_(...) #__VA_ARGS__
#define AK_STRINGIZE(...) AK_STRINGIZE_(__VA_ARGS__)
#ifndef ACCELKERNELS_TORCH_VERSION
#define ACCELKERNELS_TORCH_VERSION unknown
#endif
#ifndef ACCELKERNELS_CUDA_VERSION
#define ACCELKERNELS_CUDA_VERSION unknown
#endif
#ifndef ACCELKERNELS_ARCH_LIST
#define ACCELKERNELS_ARCH_LIST unknown
#endif

namespace {

py::dict build_info() {
  py::dict d;
  d["torch_version"] = AK_STRINGIZE(ACCELKERNELS_TORCH_VERSION);
  d["cuda_version"] = AK_STRINGIZE(ACCELKERNELS_CUDA_VERSION);
  d["cudart_version"] = CUDART_VERSION;
  d["arch_list"] = AK_STRINGIZE(ACCELKERNELS_ARCH_LIST);
  d["compiler"] = __VERSION__;
  d["kernels"] = accelkernels::registry_listing();
  return d;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "accelkernels CUDA extension: build info and the kernel registry";
  m.def("build_info", &build_info, "How this extension was built (torch, CUDA, arch list, kernels)");
  m.def("kernels", &accelkernels::registry_listing,
        "Every kernel in the registry (GEMM, then conv2d passes), with its op, dtypes and minimum arch");
}
