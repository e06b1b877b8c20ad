// kernels/layer_norm.cu compiled as host C++ against the SIMT emulator.
#include "layer_norm.cu"
