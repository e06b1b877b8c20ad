/*
 * json_util.h - reading the JSON files of a checkpoint (model_index.json,
 * config.json, scheduler and tokenizer configs) with json-c, and typed
 * getters whose errors name the file and the key. Python's json module
 * writes NaN, Infinity and -Infinity, so those are accepted.
 */
#ifndef DIFFUSE_MODEL_JSON_UTIL_H
#define DIFFUSE_MODEL_JSON_UTIL_H

#include "common.h"

#include <json-c/json.h>
#include <stdint.h>

/* Largest JSON file read whole (configs are a few KiB; tokenizer.json of
 * CLIP is ~2 MiB). */
#define DFJ_MAX_FILE_BYTES ((size_t)64 << 20)

/* Reads and parses the JSON file at @path into *out (owned by the caller:
 * json_object_put). The whole file must be one JSON value (trailing
 * whitespace allowed) and, when @want_object, an object.
 * @return DIFFUSE_OK; DIFFUSE_ERR_NOT_FOUND (no such file);
 *         DIFFUSE_ERR_IO; @bad_status for a syntax error or a wrong
 *         top-level type; DIFFUSE_ERR_OUT_OF_MEMORY. */
diffuse_status dfj_load_file(const char *path, int want_object, diffuse_status bad_status,
                             struct json_object **out, df_error *err);

/* Parses @len bytes at @text as one JSON value; the rest must be whitespace.
 * @strict selects json-c's strict mode plus UTF-8 validation. On failure
 * returns NULL and writes json-c's reason into @why (of @why_cap bytes). */
struct json_object *dfj_parse(const char *text, size_t len, int strict, char *why, size_t why_cap);

/* Typed getters for config files. @file names the file in messages. Each
 * fails with DIFFUSE_ERR_MODEL_CONFIG when the key is missing or its value
 * has the wrong type or range ("unet/config.json: key \"in_channels\" must
 * be a positive integer, found string"). */
diffuse_status dfj_get_int(const struct json_object *obj, const char *key, const char *file, int64_t min,
                           int64_t max, int64_t *out, df_error *err);
/* Element @index of the integer array @key (also within [min, max]); *len
 * receives the array length when non-NULL. */
diffuse_status dfj_get_int_elem(const struct json_object *obj, const char *key, size_t index, const char *file,
                                int64_t min, int64_t max, int64_t *out, size_t *len, df_error *err);
/* Like dfj_get_int, but a missing key (or JSON null) gives @fallback. */
diffuse_status dfj_get_int_opt(const struct json_object *obj, const char *key, int64_t fallback,
                               const char *file, int64_t min, int64_t max, int64_t *out, df_error *err);
/* String value of @key or NULL if absent/not a string (no error). The
 * pointer lives as long as @obj. */
const char *dfj_get_str_opt(const struct json_object *obj, const char *key);

/* The JSON text of @key's value for messages: "missing" when absent,
 * "null" for null. The pointer lives as long as @obj. */
const char *dfj_value_text(const struct json_object *obj, const char *key);
/* Boolean @key; absent or null gives @fallback; DIFFUSE_ERR_MODEL_CONFIG
 * naming @file and @key when it is not a boolean. */
diffuse_status dfj_get_bool_opt(const struct json_object *obj, const char *key, int fallback, const char *file,
                                int *out, df_error *err);
/* Finite number @key; absent or null gives @fallback; DIFFUSE_ERR_MODEL_CONFIG
 * otherwise. */
diffuse_status dfj_get_number_opt(const struct json_object *obj, const char *key, double fallback, const char *file,
                                  double *out, df_error *err);

/* json-c's name for a value's type ("string", "array", ... "missing"). */
const char *dfj_type_name(const struct json_object *v);

#endif /* DIFFUSE_MODEL_JSON_UTIL_H */
