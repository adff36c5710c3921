// The build's metadata, baked in by setup.py / the first-use build (accelkernels/_build_config.py) as
// bare preprocessor tokens (quoted strings do not survive ninja's shell), stringized here.
#pragma once

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
#ifndef ACCELKERNELS_HAS_SM90A
#define ACCELKERNELS_HAS_SM90A 0
#endif
