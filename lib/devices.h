/*
 * devices.h - what this host offers: the CPU, and the CUDA backend module
 * (libdiffuse_cuda.so, loaded with dlopen; libdiffuse never links CUDA).
 */
#ifndef DIFFUSE_DEVICES_H
#define DIFFUSE_DEVICES_H

#include "backend.h"
#include "diffuse.h"

#include <stddef.h>

/* Fills @info (all fields; struct_size is the library's) for the CPU a
 * backend with @n_threads (0 = all) would use. */
void df_cpu_device_info(int n_threads, diffuse_device_info *info);

/* Looks for the CUDA backend module (lib/cuda/cuda_module.h) and asks it for
 * GPUs. Returns the number of usable GPUs and writes to @note how they were
 * found or why there are none (the module's path and dlopen's error, what the
 * module lacks, or the CUDA runtime's answer). The module is searched in
 * $DIFFUSE_CUDA_MODULE, then beside libdiffuse: <dir>/diffuse/ (installed)
 * and <dir>/kernels/ (build tree). A usable module stays loaded. */
int df_cuda_probe(char *note, size_t note_size);

/* Fills @info (all fields; struct_size is the library's) for GPU @index;
 * DIFFUSE_ERR_NO_DEVICE (available 0, the reason in note) when it is not usable. */
diffuse_status df_cuda_device_info(int index, diffuse_device_info *info);

/* A CUDA backend on GPU @index in @precision, from the module. */
diffuse_status df_cuda_create(int index, diffuse_precision precision, bk_backend **out, df_error *err);

#endif /* DIFFUSE_DEVICES_H */
