// lib/cuda/cuda_kernels.cu compiled as host C++ against the SIMT emulator
// (for the emulated backend module, tests/cuda/libdiffuse_cuda_emu.so).
#include "../cuda_kernels.cu"
