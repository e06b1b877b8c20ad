// kernels/fused_ops.cu compiled as host C++ against the SIMT emulator.
#include "fused_ops.cu"
