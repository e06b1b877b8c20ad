// kernels/bench_kernels.cu compiled as host C++ against the SIMT emulator.
#include "bench_kernels.cu"
