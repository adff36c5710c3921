// The kernel registry as Python data (a list of dicts), for accelkernels._C.kernels() and the CPU
// executor's module (csrc/emulator/emu_ops.cpp). Include after torch/extension.h.
#pragma once

#include "kernel_registry.h"

namespace accelkernels {

inline py::list registry_listing() {
  auto entry = [](const char* name, const char* op, const char* dtypes, const char* min_arch,
                  const char* description, bool tensor_cores) {
    py::dict d;
    d["name"] = name;
    d["op"] = op;
    d["dtypes"] = dtypes;
    d["min_arch"] = min_arch;
    d["description"] = description;
    d["tensor_cores"] = tensor_cores;
    return d;
  };
  py::list out;
  for (const auto& k : bmm_kernels())
    out.append(entry(k.name, "cuda_bmm", k.dtypes, k.min_arch, k.description, k.operands != Operands::kStrided));
  for (const auto& k : conv_kernels())
    out.append(entry(k.name, conv_op_name(k.pass), k.dtypes, k.min_arch, k.description, k.tensor_cores));
  return out;
}

}  // namespace accelkernels
