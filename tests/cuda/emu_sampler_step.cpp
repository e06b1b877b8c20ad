// kernels/sampler_step.cu compiled as host C++ against the SIMT emulator.
#include "sampler_step.cu"
