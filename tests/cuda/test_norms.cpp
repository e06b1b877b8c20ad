/*
 * test_norms.cpp - dk_group_norm (with and without fused SiLU) and
 * dk_layer_norm on the SIMT emulator against float64 references, fp32 /
 * fp16 / bf16, odd sizes, in-place, and inputs with a large mean (where a
 * one-pass E[x^2] - E[x]^2 variance would lose the fp32 tolerance).
 */
#include "kt_common.h"

static std::vector<double> group_norm_ref(const std::vector<float> &x, const std::vector<float> &gamma,
                                          const std::vector<float> &beta, int n, int c, int hw, int groups, float eps,
                                          int silu) {
    std::vector<double> y(x.size());
    const int cpg = c / groups;
    for (int s = 0; s < n; s++)
        for (int g = 0; g < groups; g++) {
            const size_t base = ((size_t)s * c + (size_t)g * cpg) * hw, count = (size_t)cpg * hw;
            double mean = 0.0, var = 0.0;
            for (size_t i = 0; i < count; i++) mean += x[base + i];
            mean /= (double)count;
            for (size_t i = 0; i < count; i++) var += (x[base + i] - mean) * (x[base + i] - mean);
            var /= (double)count;
            for (size_t i = 0; i < count; i++) {
                const int ch = g * cpg + (int)(i / hw);
                double v = (x[base + i] - mean) / sqrt(var + eps) * gamma[ch] + beta[ch];
                if (silu) v = v / (1.0 + exp(-v));
                y[base + i] = v;
            }
        }
    return y;
}

static void group_norm_case(int n, int c, int hw, int groups, int silu, int in_place, float offset, dk_dtype t,
                            kt_rng &rng) {
    std::vector<float> x = rng.normals((size_t)n * c * hw);
    for (float &e : x) e += offset;
    x = kt_rounded(x, t);
    const std::vector<float> gamma = rng.normals((size_t)c, 0.5f), beta = rng.normals((size_t)c, 0.5f);
    void *dx = kt_to_device(x, t), *dy = in_place ? dx : kt_alloc(x.size(), t);
    float *dg = (float *)kt_to_device(gamma, DK_F32), *db = (float *)kt_to_device(beta, DK_F32);
    dk_group_norm_params p = {dx, dg, db, dy, n, c, hw, groups, 1e-5f, silu, t};
    char what[160];
    snprintf(what, sizeof what, "group_norm %s n=%d c=%d hw=%d groups=%d%s%s%s", kt_dtype_name(t), n, c, hw, groups,
             silu ? " silu" : "", in_place ? " in-place" : "", offset != 0.0f ? " offset" : "");
    if (kt_launch_ok(dk_group_norm(&p, nullptr), what))
        kt_expect_close(what, kt_download(dy, x.size(), t),
                        group_norm_ref(x, gamma, beta, n, c, hw, groups, 1e-5f, silu), t);
    cudaFree(dx);
    if (!in_place) cudaFree(dy);
    cudaFree(dg);
    cudaFree(db);
}

static void layer_norm_case(int m, int c, int in_place, float offset, dk_dtype t, kt_rng &rng) {
    std::vector<float> x = rng.normals((size_t)m * c);
    for (float &e : x) e += offset;
    x = kt_rounded(x, t);
    const std::vector<float> gamma = rng.normals((size_t)c, 0.5f), beta = rng.normals((size_t)c, 0.5f);
    void *dx = kt_to_device(x, t), *dy = in_place ? dx : kt_alloc(x.size(), t);
    float *dg = (float *)kt_to_device(gamma, DK_F32), *db = (float *)kt_to_device(beta, DK_F32);
    dk_layer_norm_params p = {dx, dg, db, dy, m, c, 1e-5f, t};
    std::vector<double> ref(x.size());
    for (int r = 0; r < m; r++) {
        const float *xr = &x[(size_t)r * c];
        double mean = 0.0, var = 0.0;
        for (int i = 0; i < c; i++) mean += xr[i];
        mean /= c;
        for (int i = 0; i < c; i++) var += (xr[i] - mean) * (xr[i] - mean);
        var /= c;
        for (int i = 0; i < c; i++) ref[(size_t)r * c + i] = (xr[i] - mean) / sqrt(var + 1e-5) * gamma[i] + beta[i];
    }
    char what[128];
    snprintf(what, sizeof what, "layer_norm %s m=%d c=%d%s%s", kt_dtype_name(t), m, c, in_place ? " in-place" : "",
             offset != 0.0f ? " offset" : "");
    if (kt_launch_ok(dk_layer_norm(&p, nullptr), what)) kt_expect_close(what, kt_download(dy, x.size(), t), ref, t);
    cudaFree(dx);
    if (!in_place) cudaFree(dy);
    cudaFree(dg);
    cudaFree(db);
}

int main(void) {
    kt_require_device();
    const double t0 = kt_now();
    kt_rng rng(11);
    const dk_dtype types[] = {DK_F32, DK_F16, DK_BF16};
    for (dk_dtype t : types) {
        group_norm_case(2, 64, 37, 32, 0, 0, 0.0f, t, rng); // SD's 32 groups, odd HW
        group_norm_case(1, 96, 64, 32, 1, 0, 0.0f, t, rng); // fused SiLU
        group_norm_case(3, 30, 17, 5, 1, 1, 0.0f, t, rng);  // odd everything, in place
        group_norm_case(1, 32, 300, 8, 0, 0, 0.0f, t, rng); // a group larger than the block (2400 values)
        layer_norm_case(7, 320, 0, 0.0f, t, rng);
        layer_norm_case(13, 77, 1, 0.0f, t, rng); // C not a multiple of 32, in place
        layer_norm_case(9, 1, 0, 0.0f, t, rng);   // C = 1: output is beta
    }
    group_norm_case(2, 32, 50, 4, 0, 0, 100.0f, DK_F32, rng); // mean 100, variance 1
    layer_norm_case(5, 640, 0, 100.0f, DK_F32, rng);

    dk_group_norm_params bad = {};
    kt_expect(dk_group_norm(&bad, nullptr) == cudaErrorInvalidValue, "group_norm: NULL refused");
    return kt_finish("test_norms", t0);
}
