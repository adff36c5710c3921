// The compiled module of the CPU executor (accelkernels/emulator/build.py): the emulated device's
// half of csrc/device_host.h (guarded, poisoned outputs; the tensors a launch may touch), and the
// Python-facing controls (emulated device settings, the registry, the PTX the executor knows).
// bmm_op.cpp and conv_op.cpp, compiled with AK_EMULATED_HOST, register the ops for CPU tensors.
#include <torch/extension.h>

#include <cstring>
#include <vector>

#include "../device_host.h"
#include "../kernel_registry.h"
#include "../registry_listing.h"
#include "ak_emu.h"
#include "tensor_map.h"

namespace ak_emu {
std::vector<std::string> known_ptx_instructions();
}

namespace accelkernels {
namespace device_host {
namespace {

constexpr int64_t kGuardBytes = 256;  // poisoned bytes each side of an output, checked after the launch
constexpr uint8_t kPoison = 0xFF;     // NaN in fp32, fp16 and bf16

struct Exposed {
  at::Tensor buffer;  // keeps the memory alive while it is registered
  const uint8_t* lo_guard = nullptr;
  const uint8_t* hi_guard = nullptr;
  std::string name;
};
std::vector<Exposed> g_exposed;

// Bytes spanned by a strided tensor's elements (0 when empty).
int64_t span_bytes(at::IntArrayRef sizes, at::IntArrayRef strides, int64_t esize) {
  int64_t last = 0;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 0) return 0;
    last += (sizes[d] - 1) * strides[d];
  }
  return (last + 1) * esize;
}

bool registered(const void* p) {
  for (const auto& e : g_exposed)
    if (e.buffer.defined() && e.buffer.data_ptr() == p) return true;
  return false;
}

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options, at::MemoryFormat format,
                        const char* name) {
  if (g_exposed.size() > 16) {
    g_exposed.clear();  // an op that returned early (empty result) never reached launch_check
    ak_emu::clear_globals();
  }
  const at::Tensor proto = at::empty(sizes, options.device(at::kCPU), format);
  const int64_t esize = proto.element_size();
  const int64_t bytes = span_bytes(proto.sizes(), proto.strides(), esize);
  const int64_t guard = kGuardBytes / esize;
  at::Tensor buffer = at::empty({bytes / esize + 2 * guard}, options.device(at::kCPU));
  std::memset(buffer.data_ptr(), kPoison, buffer.nbytes());
  at::Tensor out = buffer.as_strided(proto.sizes(), proto.strides(), guard);
  auto* base = static_cast<uint8_t*>(buffer.data_ptr());
  ak_emu::register_global(base + kGuardBytes, static_cast<size_t>(bytes), true, name);
  g_exposed.push_back(Exposed{buffer, base, base + kGuardBytes + bytes, name});
  return out;
}

void expose_input(const at::Tensor& t, const char* name) {
  if (!t.defined() || t.numel() == 0) return;
  const int64_t bytes = span_bytes(t.sizes(), t.strides(), t.element_size());
  if (registered(t.data_ptr())) return;
  ak_emu::register_global(t.data_ptr(), static_cast<size_t>(bytes), false, name);
  g_exposed.push_back(Exposed{t, nullptr, nullptr, name});
}

void launch_check() {
  std::string bad;
  for (const auto& e : g_exposed) {
    if (!e.lo_guard) continue;
    for (int64_t i = 0; i < kGuardBytes && bad.empty(); ++i)
      if (e.lo_guard[i] != kPoison)
        bad = "out-of-bounds global store: a kernel wrote " + std::to_string(kGuardBytes - i) +
              " bytes before the start of output `" + e.name + "`";
    for (int64_t i = kGuardBytes - 1; i >= 0 && bad.empty(); --i)
      if (e.hi_guard[i] != kPoison)
        bad = "out-of-bounds global store: a kernel wrote up to " + std::to_string(i + 1) +
              " bytes past the end of output `" + e.name + "`";
  }
  g_exposed.clear();
  ak_emu::clear_globals();
  TORCH_CHECK(bad.empty(), "accelkernels emulator: ", bad);
}

}  // namespace device_host

// The emulated binary always holds the wgmma code (the executor compiles it for the CPU); the setting
// stands for a build that does not, so the host's refusal can be tested without a GPU.
bool wgmma_code_present() { return ak_emu::settings().sm90a_code; }

}  // namespace accelkernels

namespace {

py::dict settings_dict() {
  const auto& s = ak_emu::settings();
  py::dict d;
  d["sm_count"] = s.sm_count;
  d["compute_capability"] = py::make_tuple(s.cc_major, s.cc_minor);
  d["seed"] = s.seed;
  d["tma_delay"] = s.tma_delay;
  d["shared_memory_per_block"] = s.smem_per_block_optin;
  d["grid_z_sample"] = s.grid_z_sample;
  d["replay"] = s.replay;
  d["sm90a_code"] = s.sm90a_code;
  return d;
}

py::dict configure(std::optional<int> sm_count, std::optional<std::pair<int, int>> capability,
                   std::optional<uint64_t> seed, std::optional<int> tma_delay, std::optional<unsigned> grid_z_sample,
                   std::optional<bool> replay, std::optional<bool> sm90a_code) {
  auto& s = ak_emu::settings();
  if (sm_count) {
    TORCH_CHECK_VALUE(*sm_count >= 1 && *sm_count <= 1024, "sm_count must be 1..1024, got ", *sm_count);
    s.sm_count = *sm_count;
  }
  if (capability) {
    TORCH_CHECK_VALUE((capability->first == 9 && capability->second == 0) ||
                          (capability->first == 8 && capability->second == 0),
                      "the emulated device is compute capability 9.0 or 8.0, got ", capability->first, ".",
                      capability->second);
    s.cc_major = capability->first;
    s.cc_minor = capability->second;
  }
  if (seed) s.seed = *seed;
  if (tma_delay) {
    TORCH_CHECK_VALUE(*tma_delay >= 1, "tma_delay must be >= 1, got ", *tma_delay);
    s.tma_delay = *tma_delay;
  }
  if (grid_z_sample) s.grid_z_sample = *grid_z_sample;
  if (replay) s.replay = *replay;
  if (sm90a_code) s.sm90a_code = *sm90a_code;
  return settings_dict();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "accelkernels' CPU executor of the CUDA kernels (ACCELKERNELS_CUDA_EMULATE=1)";
  m.def("configure", &configure, py::arg("sm_count") = py::none(), py::arg("compute_capability") = py::none(),
        py::arg("seed") = py::none(), py::arg("tma_delay") = py::none(),
        py::arg("grid_z_sample") = py::none(), py::arg("replay") = py::none(), py::arg("sm90a_code") = py::none(),
        "Set the emulated device (SM count, compute capability 9.0/8.0, thread-order seed, TMA delay; "
        "grid_z_sample=N runs only the first and last N blocks along grid z, for tests of huge batches; "
        "replay=True runs every launch twice, the second time in reverse thread order, and requires identical outputs; "
        "sm90a_code=False stands for a build without sm_90a code, whose wgmma kernels the host must refuse)");
  m.def("settings", &settings_dict, "The emulated device's settings");
  m.def("kernels", &accelkernels::registry_listing, "The kernel registry (as accelkernels._C.kernels())");
  m.def("known_ptx", &ak_emu::known_ptx_instructions, "The PTX instructions the executor interprets");
  m.def("last_tensor_map_error", [] { return ak_emu::last_tensor_map_error(); });
}
