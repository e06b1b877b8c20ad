// kernels/attention.cu compiled as host C++ against the SIMT emulator.
#include "attention.cu"
