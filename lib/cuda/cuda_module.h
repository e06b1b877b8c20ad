/*
 * cuda_module.h - the contract between libdiffuse and its CUDA backend module
 * (libdiffuse_cuda.so), which libdiffuse loads with dlopen (lib/devices.c)
 * and never links.
 *
 * The module exports one C symbol, DF_CUDA_ENTRY_NAME, a function returning a
 * constant table. The table's abi field must equal DF_CUDA_MODULE_ABI and the
 * struct sizes must match this library's: the backend it creates fills in
 * the library-internal structs of backend.h (bk_backend, bk_ops, df_error),
 * so module and library come from one build; a mismatch is reported as a
 * note, never loaded.
 *
 * Two modules implement it from the same sources (lib/cuda/): the real one
 * (nvcc, CUDA runtime + cuBLAS + cuDNN) and the emulated one
 * (tests/cuda/libdiffuse_cuda_emu.so: kernels on the SIMT emulator, cuBLAS
 * and cuDNN served by host shims) that the tests run on machines without a GPU.
 */
#ifndef DIFFUSE_CUDA_MODULE_H
#define DIFFUSE_CUDA_MODULE_H

#include "backend.h"
#include "diffuse.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DF_CUDA_ENTRY_NAME "diffuse_cuda_backend_v2"
#define DF_CUDA_MODULE_ABI 2u

/* The module's device copy of the weights: uploaded on first use into a
 * pool. A weight of DF_CUDA_POOL_LARGE bytes or more gets an allocation of
 * its own; smaller ones are packed, each rounded up to DF_CUDA_ALIGN, into
 * chunks of DF_CUDA_POOL_CHUNK bytes (a new chunk when the last one cannot
 * take the next weight, so each full chunk is at least 7/8 used). */
#define DF_CUDA_ALIGN ((size_t)256)
#define DF_CUDA_POOL_CHUNK ((size_t)8 << 20)
#define DF_CUDA_POOL_LARGE (DF_CUDA_POOL_CHUNK / 8)

/* An upper bound of the device bytes the pool allocates for weights holding
 * @f32_bytes in @count tensors: large ones exactly, small ones (rounded up)
 * in chunks at least 7/8 full, plus the last, partly filled chunk. */
static inline uint64_t df_cuda_weight_bound(uint64_t f32_bytes, uint64_t count) {
    const uint64_t packed = f32_bytes + count * DF_CUDA_ALIGN;
    return packed + packed / 7 + DF_CUDA_POOL_CHUNK;
}

typedef struct df_cuda_module {
    uint32_t abi;           /* DF_CUDA_MODULE_ABI */
    uint32_t backend_size;  /* sizeof(bk_backend) of the module's build */
    uint32_t ops_size;      /* sizeof(bk_ops) */
    uint32_t error_size;    /* sizeof(df_error) */
    const char *name;       /* "cuda" or "cuda-emu" (also the backend's ops->name) */
    /* Number of usable devices (0 when none); on 0 writes why to @note
     * (e.g. the CUDA runtime's error). Never aborts. */
    int (*count_devices)(char *note, size_t note_size);
    /* Fills @info (struct_size already set to the library's size) for device
     * @index: name, memory_bytes, note. Returns DIFFUSE_OK or NO_DEVICE. */
    diffuse_status (*device_info)(int index, diffuse_device_info *info);
    /* A backend on device @index computing in @precision (AUTO and F32: the
     * fp32 validation mode; F16/BF16: DIFFUSE_ERR_UNSUPPORTED for now). On
     * failure *out is NULL and @err says why. */
    diffuse_status (*create)(int index, diffuse_precision precision, bk_backend **out, df_error *err);
} df_cuda_module;

/* The type of the exported entry point. */
typedef const df_cuda_module *(*df_cuda_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* DIFFUSE_CUDA_MODULE_H */
