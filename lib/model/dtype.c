/*
 * dtype.c - safetensors dtype names and sizes, and the half/bfloat16 to
 * float32 conversions used when a model's weights are loaded (see dtype.h).
 * The conversions work on bit patterns, so they are exact and need no FPU
 * support for half precision.
 */
#include "model/dtype.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_table[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1},       [ST_U8] = {"U8", 1},   [ST_I8] = {"I8", 1},
    [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
    [ST_I16] = {"I16", 2},         [ST_U16] = {"U16", 2}, [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2},       [ST_I32] = {"I32", 4}, [ST_U32] = {"U32", 4},
    [ST_F32] = {"F32", 4},         [ST_I64] = {"I64", 8}, [ST_U64] = {"U64", 8},
    [ST_F64] = {"F64", 8},
};

int st_dtype_parse(const char *name, st_dtype *out) {
    for (int i = 0; i < ST_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_table[i].name) == 0) {
            *out = (st_dtype)i;
            return 0;
        }
    }
    return -1;
}

const char *st_dtype_name(st_dtype dt) {
    return (unsigned)dt < ST_DTYPE_COUNT ? dtype_table[dt].name : "?";
}

size_t st_dtype_size(st_dtype dt) {
    return (unsigned)dt < ST_DTYPE_COUNT ? dtype_table[dt].size : 0;
}

int st_dtype_is_weight(st_dtype dt) {
    return dt == ST_F32 || dt == ST_F16 || dt == ST_BF16;
}

static float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float df_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) /* inf / NaN: keep the payload */
        return bits_to_f32(sign | 0x7f800000u | (man << 13));
    if (exp != 0) /* normal: rebias 15 -> 127 */
        return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
    if (man == 0) return bits_to_f32(sign); /* +-0 */
    /* subnormal half: man * 2^-24, normalise it for float32 */
    int e = -1;
    do {
        e++;
        man <<= 1;
    } while ((man & 0x400u) == 0);
    return bits_to_f32(sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13));
}

float df_bf16_to_f32(uint16_t b) {
    return bits_to_f32((uint32_t)b << 16);
}

void df_convert_to_f32(st_dtype dt, const void *src, float *dst, size_t n) {
    const uint8_t *p = src;
    switch (dt) {
    case ST_F32:
        for (size_t i = 0; i < n; i++, p += 4) {
            uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
            dst[i] = bits_to_f32(u);
        }
        break;
    case ST_F16:
        for (size_t i = 0; i < n; i++, p += 2) dst[i] = df_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
        break;
    case ST_BF16:
        for (size_t i = 0; i < n; i++, p += 2) dst[i] = df_bf16_to_f32((uint16_t)(p[0] | p[1] << 8));
        break;
    default:
        break;
    }
}
