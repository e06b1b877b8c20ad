// kernels/timestep_embedding.cu compiled as host C++ against the SIMT emulator.
#include "timestep_embedding.cu"
