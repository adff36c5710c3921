// Where the wgmma/TMA kernels have bodies: sm_90a code only (the "a" target enables wgmma, setmaxnreg
// and the TMA forms), and the CPU executor, which defines AK_WGMMA_ENABLED itself. Every other
// architecture's code compiles empty stubs in their place, so the host must not launch them there:
// csrc/wgmma_code.cu lets it ask the loaded binary.
#pragma once

#if !defined(AK_WGMMA_ENABLED) && defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 900) && \
    defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define AK_WGMMA_ENABLED 1
#endif
