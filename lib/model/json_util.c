/*
 * json_util.c - whole-file JSON reading and typed config getters (see
 * json_util.h). Every error names the file, and for getters the key, so a
 * user can open the file and fix it.
 */
#include "model/json_util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int is_json_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

struct json_object *dfj_parse(const char *text, size_t len, int strict, char *why, size_t why_cap) {
    if (len > (size_t)INT32_MAX) {
        df_strlcpy(why, "text too long", why_cap);
        return NULL;
    }
    if (memchr(text, '\0', len)) { /* json-c would stop at a NUL byte */
        df_strlcpy(why, "NUL byte in JSON text", why_cap);
        return NULL;
    }
    struct json_tokener *tok = json_tokener_new();
    if (!tok) {
        df_strlcpy(why, "out of memory", why_cap);
        return NULL;
    }
    if (strict) json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *obj = json_tokener_parse_ex(tok, text, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (jerr == json_tokener_continue) {
        json_object_put(obj);
        df_strlcpy(why, "JSON text ends early", why_cap);
        return NULL;
    }
    if (jerr != json_tokener_success || !obj) {
        json_object_put(obj);
        snprintf(why, why_cap, "%s at byte %zu", json_tokener_error_desc(jerr), end);
        return NULL;
    }
    for (size_t i = end; i < len; i++) {
        if (!is_json_space(text[i])) {
            json_object_put(obj);
            snprintf(why, why_cap, "unexpected data after the JSON value at byte %zu", i);
            return NULL;
        }
    }
    return obj;
}

/* Reads the whole regular file at @path into a malloc'd buffer. */
static diffuse_status read_small_file(const char *path, char **out, size_t *out_len, df_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block the load */
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR) return df_fail(err, DIFFUSE_ERR_NOT_FOUND, "%s: file not found", path);
        return df_fail(err, DIFFUSE_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return df_fail(err, DIFFUSE_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > DFJ_MAX_FILE_BYTES) {
        close(fd);
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: %lld bytes is too large for a JSON config (limit %zu)",
                       path, (long long)st.st_size, DFJ_MAX_FILE_BYTES);
    }
    size_t len = (size_t)st.st_size;
    char *buf = malloc(len + 1);
    if (!buf) {
        close(fd);
        return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes", path, len + 1);
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return df_fail(err, DIFFUSE_ERR_IO, "%s: read failed: %s", path, strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return DIFFUSE_OK;
}

diffuse_status dfj_load_file(const char *path, int want_object, diffuse_status bad_status,
                             struct json_object **out, df_error *err) {
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    diffuse_status s = read_small_file(path, &text, &len, err);
    if (s != DIFFUSE_OK) return s;
    char why[256];
    struct json_object *obj = dfj_parse(text, len, 0, why, sizeof why);
    free(text);
    if (!obj) return df_fail(err, bad_status, "%s: invalid JSON: %s", path, why);
    if (want_object && !json_object_is_type(obj, json_type_object)) {
        diffuse_status r = df_fail(err, bad_status, "%s: expected a JSON object at the top level, found %s",
                                   path, dfj_type_name(obj));
        json_object_put(obj);
        return r;
    }
    *out = obj;
    return DIFFUSE_OK;
}

const char *dfj_type_name(const struct json_object *v) {
    if (!v) return "null";
    return json_type_to_name(json_object_get_type(v));
}

/* Checks that @v is an integer within [min, max]; @what names it. */
static diffuse_status check_int(const struct json_object *v, const char *what, const char *file, int64_t min,
                                int64_t max, int64_t *out, df_error *err) {
    if (!v || !json_object_is_type(v, json_type_int))
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: %s must be an integer, found %s", file, what,
                       dfj_type_name(v));
    int64_t x = json_object_get_int64(v);
    if (x < min || x > max)
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: %s is %lld, expected %lld..%lld", file, what,
                       (long long)x, (long long)min, (long long)max);
    *out = x;
    return DIFFUSE_OK;
}

diffuse_status dfj_get_int(const struct json_object *obj, const char *key, const char *file, int64_t min,
                           int64_t max, int64_t *out, df_error *err) {
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(obj, key, &v))
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: required key \"%s\" is missing", file, key);
    char what[160];
    snprintf(what, sizeof what, "key \"%s\"", key);
    return check_int(v, what, file, min, max, out, err);
}

diffuse_status dfj_get_int_opt(const struct json_object *obj, const char *key, int64_t fallback,
                               const char *file, int64_t min, int64_t max, int64_t *out, df_error *err) {
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(obj, key, &v) || v == NULL) {
        *out = fallback;
        return DIFFUSE_OK;
    }
    char what[160];
    snprintf(what, sizeof what, "key \"%s\"", key);
    return check_int(v, what, file, min, max, out, err);
}

diffuse_status dfj_get_int_elem(const struct json_object *obj, const char *key, size_t index, const char *file,
                                int64_t min, int64_t max, int64_t *out, size_t *len, df_error *err) {
    struct json_object *arr = NULL;
    if (!json_object_object_get_ex(obj, key, &arr))
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: required key \"%s\" is missing", file, key);
    if (!json_object_is_type(arr, json_type_array))
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: key \"%s\" must be an array of integers, found %s",
                       file, key, dfj_type_name(arr));
    size_t n = json_object_array_length(arr);
    if (len) *len = n;
    if (index >= n)
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: key \"%s\" has %zu entries, need at least %zu", file,
                       key, n, index + 1);
    char what[160];
    snprintf(what, sizeof what, "key \"%s\"[%zu]", key, index);
    return check_int(json_object_array_get_idx(arr, index), what, file, min, max, out, err);
}

const char *dfj_get_str_opt(const struct json_object *obj, const char *key) {
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string)) return NULL;
    return json_object_get_string(v);
}

const char *dfj_value_text(const struct json_object *obj, const char *key) {
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(obj, key, &v)) return "missing";
    return v ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN) : "null";
}

diffuse_status dfj_get_bool_opt(const struct json_object *obj, const char *key, int fallback, const char *file,
                                int *out, df_error *err) {
    struct json_object *v = NULL;
    *out = fallback;
    if (!json_object_object_get_ex(obj, key, &v) || !v) return DIFFUSE_OK;
    if (!json_object_is_type(v, json_type_boolean))
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: key \"%s\" must be true or false, found %s", file, key,
                       dfj_value_text(obj, key));
    *out = json_object_get_boolean(v);
    return DIFFUSE_OK;
}

diffuse_status dfj_get_number_opt(const struct json_object *obj, const char *key, double fallback, const char *file,
                                  double *out, df_error *err) {
    struct json_object *v = NULL;
    *out = fallback;
    if (!json_object_object_get_ex(obj, key, &v) || !v) return DIFFUSE_OK;
    if ((!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double)) ||
        !isfinite(json_object_get_double(v)))
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: key \"%s\" must be a finite number, found %s", file, key,
                       dfj_value_text(obj, key));
    *out = json_object_get_double(v);
    return DIFFUSE_OK;
}
