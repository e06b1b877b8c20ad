/*
 * dtype.h - the element types a safetensors file may declare, their sizes,
 * and the conversions of 16-bit floats (IEEE half, bfloat16) to float32
 * that the loader applies once when a model is loaded.
 */
#ifndef DIFFUSE_MODEL_DTYPE_H
#define DIFFUSE_MODEL_DTYPE_H

#include <stddef.h>
#include <stdint.h>

/* Every dtype the safetensors format names. Only the float ones can be
 * network weights here; the rest are recognised so that a valid file with
 * an integer buffer (e.g. CLIP's position_ids, I64) still loads. */
typedef enum st_dtype {
    ST_BOOL = 0,
    ST_U8,
    ST_I8,
    ST_F8_E4M3,
    ST_F8_E5M2,
    ST_I16,
    ST_U16,
    ST_F16,
    ST_BF16,
    ST_I32,
    ST_U32,
    ST_F32,
    ST_I64,
    ST_U64,
    ST_F64,
    ST_DTYPE_COUNT
} st_dtype;

/* Parses the safetensors spelling ("F32", "BF16", ...). Returns 0 and sets
 * *out, or -1 for a name this version does not know. */
int st_dtype_parse(const char *name, st_dtype *out);

/* The safetensors spelling of @dt ("?" if out of range). */
const char *st_dtype_name(st_dtype dt);

/* Bytes per element. */
size_t st_dtype_size(st_dtype dt);

/* 1 if tensors of @dt can be exposed as float32 weights (F32, F16, BF16). */
int st_dtype_is_weight(st_dtype dt);

/* Exact conversions (every half and bfloat16 value is a float32 value):
 * subnormals, infinities and NaN (payload kept) included. */
float df_f16_to_f32(uint16_t h);
float df_bf16_to_f32(uint16_t b);

/* Converts @n little-endian elements at @src (any alignment) to float32.
 * @dt must be ST_F32, ST_F16 or ST_BF16. */
void df_convert_to_f32(st_dtype dt, const void *src, float *dst, size_t n);

#endif /* DIFFUSE_MODEL_DTYPE_H */
