// The pybind11 module accelkernels._C: build metadata and the kernel registry.
// Importing it also runs the TORCH_LIBRARY_IMPL blocks of the other translation units, which give
// the accelkernels ops (schemas defined in Python) their CUDA implementations.
#include <torch/extension.h>

#include <cuda_runtime_api.h>

#include "kernel_registry.h"
#include "registry_listing.h"

#include "build_meta.h"
#include "kernels/bmm_args.h"

namespace {

py::dict build_info() {
  py::dict d;
  d["torch_version"] = AK_STRINGIZE(ACCELKERNELS_TORCH_VERSION);
  d["cuda_version"] = AK_STRINGIZE(ACCELKERNELS_CUDA_VERSION);
  d["cudart_version"] = CUDART_VERSION;
  d["arch_list"] = AK_STRINGIZE(ACCELKERNELS_ARCH_LIST);
  d["sm90a"] = ACCELKERNELS_HAS_SM90A != 0;  // the arch list names 9.0a: the wgmma kernels have bodies
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
  m.def("wgmma_code_present", &accelkernels::wgmma_code_present,
        "Whether the code loaded for the current CUDA device holds the wgmma kernels (sm_90a); asks the GPU");
}
