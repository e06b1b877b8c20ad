/* cuda_runtime.h - emulator shim: the kernels' #include <cuda_runtime.h> resolves here when
 * they are compiled as host C++ against the SIMT emulator (../cuda_emu.h). */
#ifndef DIFFUSE_EMU_SHIM_CUDA_RUNTIME_H
#define DIFFUSE_EMU_SHIM_CUDA_RUNTIME_H
#include "../cuda_emu.h"
#endif
