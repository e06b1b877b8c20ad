/*
 * test_fused_ops.cpp - GEGLU, bias + residual, nearest upsample x2, channel
 * concat (fp32/fp16/bf16) and the timestep embedding (fp32) on the SIMT
 * emulator against float64 references, odd sizes throughout.
 */
#include "kt_common.h"

static void geglu_case(int m, int d, dk_dtype t, kt_rng &rng) {
    const std::vector<float> in = kt_rounded(rng.normals((size_t)m * 2 * d, 2.0f), t);
    void *din = kt_to_device(in, t), *dout = kt_alloc((size_t)m * d, t);
    std::vector<double> ref((size_t)m * d);
    for (int r = 0; r < m; r++)
        for (int j = 0; j < d; j++) {
            const double h = in[(size_t)r * 2 * d + j], gate = in[(size_t)r * 2 * d + d + j];
            ref[(size_t)r * d + j] = h * 0.5 * gate * erfc(-gate / sqrt(2.0));
        }
    char what[96];
    snprintf(what, sizeof what, "geglu %s m=%d d=%d", kt_dtype_name(t), m, d);
    if (kt_launch_ok(dk_geglu(din, dout, m, d, t, nullptr), what))
        kt_expect_close(what, kt_download(dout, (size_t)m * d, t), ref, t);
    cudaFree(din);
    cudaFree(dout);
}

static void bias_residual_case(size_t n, int inner, int nbias, int use_bias, int use_res, int in_place, dk_dtype t,
                               kt_rng &rng) {
    const std::vector<float> in = kt_rounded(rng.normals(n), t), res = kt_rounded(rng.normals(n), t);
    const std::vector<float> bias = kt_rounded(rng.normals((size_t)nbias), t);
    void *din = kt_to_device(in, t), *dres = use_res ? kt_to_device(res, t) : nullptr;
    void *dbias = use_bias ? kt_to_device(bias, t) : nullptr;
    void *dout = in_place ? din : kt_alloc(n, t);
    dk_bias_residual_params p = {din, dbias, dres, dout, n, inner, nbias, t};
    std::vector<double> ref(n);
    for (size_t i = 0; i < n; i++)
        ref[i] = (double)in[i] + (use_bias ? bias[i / inner % nbias] : 0.0) + (use_res ? res[i] : 0.0);
    char what[128];
    snprintf(what, sizeof what, "bias_residual %s n=%zu inner=%d nbias=%d%s%s%s", kt_dtype_name(t), n, inner, nbias,
             use_bias ? " bias" : "", use_res ? " residual" : "", in_place ? " in-place" : "");
    if (kt_launch_ok(dk_bias_residual(&p, nullptr), what)) {
        // fp16/bf16 outputs are the fp32 sum rounded once: compare with the rounded reference's tolerance.
        kt_expect_close(what, kt_download(dout, n, t), ref, t);
    }
    cudaFree(din);
    cudaFree(dres);
    cudaFree(dbias);
    if (!in_place) cudaFree(dout);
}

static void upsample_case(int nc, int h, int w, dk_dtype t, kt_rng &rng) {
    const std::vector<float> in = kt_rounded(rng.normals((size_t)nc * h * w), t);
    void *din = kt_to_device(in, t), *dout = kt_alloc((size_t)nc * h * w * 4, t);
    std::vector<double> ref((size_t)nc * h * w * 4);
    for (int c = 0; c < nc; c++)
        for (int y = 0; y < 2 * h; y++)
            for (int x = 0; x < 2 * w; x++)
                ref[((size_t)c * 2 * h + y) * 2 * w + x] = in[((size_t)c * h + y / 2) * w + x / 2];
    char what[96];
    snprintf(what, sizeof what, "upsample2x %s nc=%d h=%d w=%d", kt_dtype_name(t), nc, h, w);
    if (kt_launch_ok(dk_upsample2x(din, dout, nc, h, w, t, nullptr), what)) {
        const std::vector<float> out = kt_download(dout, ref.size(), t);
        kt_expect(kt_rel_err(out, ref) == 0.0, "%s: not an exact copy", what); // a copy: exact in every dtype
    }
    cudaFree(din);
    cudaFree(dout);
}

static void concat_case(int n, int ca, int cb, int hw, dk_dtype t, kt_rng &rng) {
    const std::vector<float> a = kt_rounded(rng.normals((size_t)n * ca * hw), t);
    const std::vector<float> b = kt_rounded(rng.normals((size_t)n * cb * hw), t);
    void *da = kt_to_device(a, t), *db = kt_to_device(b, t), *dout = kt_alloc((size_t)n * (ca + cb) * hw, t);
    std::vector<double> ref((size_t)n * (ca + cb) * hw);
    for (int s = 0; s < n; s++)
        for (int c = 0; c < ca + cb; c++)
            for (int p = 0; p < hw; p++)
                ref[((size_t)s * (ca + cb) + c) * hw + p] =
                    c < ca ? a[((size_t)s * ca + c) * hw + p] : b[((size_t)s * cb + c - ca) * hw + p];
    char what[96];
    snprintf(what, sizeof what, "concat %s n=%d ca=%d cb=%d hw=%d", kt_dtype_name(t), n, ca, cb, hw);
    if (kt_launch_ok(dk_concat(da, db, dout, n, ca, cb, hw, t, nullptr), what))
        kt_expect(kt_rel_err(kt_download(dout, ref.size(), t), ref) == 0.0, "%s: not an exact copy", what);
    cudaFree(da);
    cudaFree(db);
    cudaFree(dout);
}

/* The CPU backend's rounding (lib/cpu/cpu_timestep.c), evaluated in float64 at the end. */
static void timestep_case(int n, int dim, int flip, float shift, float scale, float max_period, kt_rng &rng) {
    std::vector<float> t((size_t)n);
    for (float &e : t) e = (float)(int)(rng.uniform() * 1000.0); // integer timesteps up to 999
    t[0] = 999.0f;
    float *dt = (float *)kt_to_device(t, DK_F32), *dout = (float *)kt_alloc((size_t)n * dim, DK_F32);
    dk_timestep_params p = {dt, dout, n, dim, flip, shift, scale, max_period};
    const int half = dim / 2;
    const float neg_log = (float)-log((double)max_period), denom = (float)((double)half - (double)shift);
    std::vector<double> ref((size_t)n * dim, 0.0);
    for (int r = 0; r < n; r++)
        for (int i = 0; i < half; i++) {
            const float freq = (float)exp((double)((neg_log * (float)i) / denom));
            const double arg = (double)(scale * (t[(size_t)r] * freq));
            ref[(size_t)r * dim + (flip ? half : 0) + i] = sin(arg);
            ref[(size_t)r * dim + (flip ? 0 : half) + i] = cos(arg);
        }
    char what[128];
    snprintf(what, sizeof what, "timestep_embedding n=%d dim=%d flip=%d shift=%g", n, dim, flip, (double)shift);
    if (kt_launch_ok(dk_timestep_embedding(&p, nullptr), what))
        kt_expect_close(what, kt_download(dout, (size_t)n * dim, DK_F32), ref, DK_F32);
    cudaFree(dt);
    cudaFree(dout);
}

int main(void) {
    kt_require_device();
    const double t0 = kt_now();
    kt_rng rng(17);
    const dk_dtype types[] = {DK_F32, DK_F16, DK_BF16};
    for (dk_dtype t : types) {
        geglu_case(37, 53, t, rng);
        bias_residual_case(7 * 33, 1, 33, 1, 1, 0, t, rng);         // row bias on (7, 33) tokens + residual
        bias_residual_case(2 * 5 * 19, 19, 5, 1, 0, 1, t, rng);     // channel bias on NCHW, in place
        bias_residual_case(2 * 5 * 19, 19, 2 * 5, 1, 1, 0, t, rng); // per-sample channel bias
        bias_residual_case(301, 1, 1, 0, 1, 0, t, rng);             // residual only
        upsample_case(5, 7, 9, t, rng);
        concat_case(2, 3, 5, 17, t, rng);
    }
    timestep_case(2, 320, 1, 0.0f, 1.0f, 10000.0f, rng); // SD 1.x/2.x: flip_sin_to_cos, shift 0
    timestep_case(3, 256, 0, 1.0f, 1.0f, 10000.0f, rng); // shift 1 (DDPM-style)
    timestep_case(1, 33, 0, 1.0f, 2.0f, 5000.0f, rng);   // odd dim: zero pad
    kt_expect(dk_geglu(nullptr, nullptr, 1, 1, DK_F32, nullptr) == cudaErrorInvalidValue, "geglu: NULL refused");
    return kt_finish("test_fused_ops", t0);
}
