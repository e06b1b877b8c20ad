/* cuda_fp16.h - emulator shim: the kernels' #include <cuda_fp16.h> resolves here when
 * they are compiled as host C++ against the SIMT emulator (../cuda_emu.h). */
#ifndef DIFFUSE_EMU_SHIM_CUDA_FP16_H
#define DIFFUSE_EMU_SHIM_CUDA_FP16_H
#include "../cuda_emu.h"
#endif
