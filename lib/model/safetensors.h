/*
 * safetensors.h - a validated, memory-mapped safetensors file (internal).
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON header
 * (tensor name -> {dtype, shape, data_offsets}, optional "__metadata__"),
 * then the data section that data_offsets index. st_open() maps the file
 * read-only and checks every rule of the format before anything is used;
 * st_expose_f32() then gives every floating-point tensor a float32 view.
 */
#ifndef DIFFUSE_MODEL_SAFETENSORS_H
#define DIFFUSE_MODEL_SAFETENSORS_H

#include "common.h"
#include "model/dtype.h"

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8
/* The reference implementation refuses headers above 100 MiB. */
#define ST_MAX_HEADER_BYTES ((uint64_t)100 << 20)

/* One tensor of a file. Everything points into its st_file. */
typedef struct st_tensor {
    const char *name;           /* NUL-terminated key */
    st_dtype dtype;
    int ndim;                   /* 0 for a scalar */
    int64_t shape[ST_MAX_DIMS]; /* shape[0..ndim) */
    size_t numel;               /* product of shape (1 for a scalar) */
    size_t nbytes;              /* numel * dtype size */
    size_t offset;              /* begin of its bytes within the data section */
    const void *data;           /* nbytes raw little-endian bytes in the mapping */
    const float *f32;           /* float32 view after st_expose_f32() for F32/F16/BF16; else NULL */
} st_tensor;

/* An open safetensors file. Immutable after st_expose_f32(). */
typedef struct st_file {
    char path[4096];
    void *map;                  /* the whole file, PROT_READ, MAP_PRIVATE */
    size_t map_size;
    size_t header_size;         /* N */
    const uint8_t *data;        /* data section: map + 8 + N */
    size_t data_size;
    size_t n_tensors;
    st_tensor *tensors;         /* sorted by name (st_find uses bsearch) */
    char *names;                /* pool the tensor names point into */
    struct json_object *metadata; /* "__metadata__" (string -> string) or NULL; owned */
    float *f32_slab;            /* converted F16/BF16/misaligned F32 weights; owned */
    size_t f32_slab_floats;
} st_file;

/* Maps and validates the file at @path.
 * @return DIFFUSE_OK and *out; DIFFUSE_ERR_NOT_FOUND; DIFFUSE_ERR_IO (open,
 *         stat or mmap failed, not a regular file); DIFFUSE_ERR_MODEL_UNSAFE
 *         (the bytes are a pickle or a zip, i.e. a torch.save checkpoint);
 *         DIFFUSE_ERR_MODEL_FORMAT (empty file, header length 0 or above
 *         100 MiB, invalid or non-UTF-8 JSON, unknown dtype, bad shape or
 *         offsets, size/shape mismatch, overlapping tensors, duplicate names,
 *         a shape whose byte size overflows); DIFFUSE_ERR_MODEL_TRUNCATED
 *         (the file ends before its header or a tensor does);
 *         DIFFUSE_ERR_UNSUPPORTED (more than ST_MAX_DIMS dimensions);
 *         DIFFUSE_ERR_OUT_OF_MEMORY. Messages name the file and the tensor.
 * On failure nothing stays mapped or allocated. */
diffuse_status st_open(const char *path, st_file **out, df_error *err);

/* Sets f32 of every F32/F16/BF16 tensor: aligned F32 data is used in place,
 * the others are converted into one float32 slab owned by @f.
 * @return DIFFUSE_OK; DIFFUSE_ERR_OUT_OF_MEMORY. */
diffuse_status st_expose_f32(st_file *f, df_error *err);

/* Adds to *host_bytes the host memory @f's weights take once used (its
 * float32 slab, plus the file bytes of float32 tensors read in place) and
 * to dtype_bytes[dtype] the stored bytes of its weight tensors. */
void st_memory(const st_file *f, size_t *host_bytes, size_t dtype_bytes[ST_DTYPE_COUNT]);

/* The tensor called @name, or NULL. */
const st_tensor *st_find(const st_file *f, const char *name);

/* Unmaps and frees. Accepts NULL. */
void st_close(st_file *f);

/* Writes "[a, b, c]" into @buf; returns @buf. */
const char *st_shape_str(const int64_t *shape, int ndim, char *buf, size_t cap);

/* 1 if the first @len bytes of a file look like a torch.save checkpoint
 * (zip archive or raw pickle) rather than safetensors. */
int st_looks_like_pickle(const uint8_t *head, size_t len);

#endif /* DIFFUSE_MODEL_SAFETENSORS_H */
