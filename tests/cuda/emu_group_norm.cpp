// kernels/group_norm.cu compiled as host C++ against the SIMT emulator.
#include "group_norm.cu"
