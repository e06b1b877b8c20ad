/*
 * test_sampler_step.cpp - dk_sampler_step on the SIMT emulator against a
 * float64 reference: CFG combine + update + noise + history + aux output, for
 * fp32/fp16/bf16 model outputs, in place, without CFG, and with coefficients
 * of real samplers (Euler, Euler ancestral, DDIM, DPM-Solver++ 2M) computed
 * here from a sigma / alpha-bar pair.
 */
#include "kt_common.h"

struct step_case {
    const char *name;
    int cfg, noise, nhist, aux, in_place;
    float g, a, b, c, d[DK_SAMPLER_HIST], aux_a, aux_b;
};

static void run(const step_case &sc, size_t n, dk_dtype mt, kt_rng &rng) {
    const std::vector<float> x = rng.normals(n), noise = rng.normals(n);
    const std::vector<float> un = kt_rounded(rng.normals(n), mt), co = kt_rounded(rng.normals(n), mt);
    std::vector<std::vector<float>> hist;
    for (int j = 0; j < sc.nhist; j++) hist.push_back(rng.normals(n));
    float *dx = (float *)kt_to_device(x, DK_F32);
    float *dout = sc.in_place ? dx : (float *)kt_alloc(n, DK_F32);
    float *daux = sc.aux ? (float *)kt_alloc(n, DK_F32) : nullptr;
    void *dun = kt_to_device(un, mt), *dco = sc.cfg ? kt_to_device(co, mt) : nullptr;
    float *dnoise = sc.noise ? (float *)kt_to_device(noise, DK_F32) : nullptr;
    dk_sampler_step_params p = {};
    p.x = dx;
    p.uncond = dun;
    p.cond = dco;
    p.model_dtype = mt;
    p.guidance = sc.g;
    p.noise = dnoise;
    for (int j = 0; j < sc.nhist; j++) {
        p.hist[j] = (float *)kt_to_device(hist[(size_t)j], DK_F32);
        p.d[j] = sc.d[j];
    }
    p.a = sc.a;
    p.b = sc.b;
    p.c = sc.noise ? sc.c : 0.0f;
    p.x_out = dout;
    p.aux = daux;
    p.aux_a = sc.aux_a;
    p.aux_b = sc.aux_b;
    p.n = n;
    std::vector<double> ref(n), ref_aux(n);
    for (size_t i = 0; i < n; i++) {
        const double m = sc.cfg ? un[i] + (double)sc.g * ((double)co[i] - un[i]) : un[i];
        double y = (double)sc.a * x[i] + (double)sc.b * m;
        if (sc.noise) y += (double)sc.c * noise[i];
        for (int j = 0; j < sc.nhist; j++) y += (double)sc.d[j] * hist[(size_t)j][i];
        ref[i] = y;
        ref_aux[i] = (double)sc.aux_a * x[i] + (double)sc.aux_b * m;
    }
    char what[128];
    snprintf(what, sizeof what, "sampler_step %s model=%s n=%zu", sc.name, kt_dtype_name(mt), n);
    if (kt_launch_ok(dk_sampler_step(&p, nullptr), what)) {
        kt_expect_close(what, kt_download(dout, n, DK_F32), ref, DK_F32); // fp32 math and output
        if (sc.aux) {
            char w2[160];
            snprintf(w2, sizeof w2, "%s aux", what);
            kt_expect_close(w2, kt_download(daux, n, DK_F32), ref_aux, DK_F32);
        }
    }
    cudaFree(dx);
    if (!sc.in_place) cudaFree(dout);
    cudaFree(daux);
    cudaFree(dun);
    cudaFree(dco);
    cudaFree(dnoise);
    for (int j = 0; j < sc.nhist; j++) cudaFree((void *)p.hist[j]);
}

int main(void) {
    kt_require_device();
    const double t0 = kt_now();
    kt_rng rng(13);
    // k-diffusion sigmas of two consecutive steps, and DDPM alpha-bars.
    const double s0 = 2.5, s1 = 1.7, ab0 = 0.30, ab1 = 0.45;
    // Euler (eps prediction): x1 = x + (s1 - s0) eps.
    const float euler_b = (float)(s1 - s0);
    // Euler ancestral: sigma_up, sigma_down as k-diffusion's get_ancestral_step (eta 1).
    const double up = sqrt(s1 * s1 * (s0 * s0 - s1 * s1) / (s0 * s0)), down = sqrt(s1 * s1 - up * up);
    // DDIM (eta 0): x1 = sqrt(ab1) x0 + sqrt(1 - ab1) eps, x0 = (x - sqrt(1 - ab0) eps) / sqrt(ab0).
    const double ddim_a = sqrt(ab1 / ab0), ddim_b = sqrt(1 - ab1) - sqrt(ab1) * sqrt(1 - ab0) / sqrt(ab0);
    // DPM-Solver++ 2M (sigma space): h = ln(s0/s1), r = h_prev / h, x0 = x - s0 eps,
    // x1 = (s1/s0) x - (e^-h - 1) ((1 + 1/2r) x0 - 1/2r x0_prev); aux = x0 for the next step.
    const double h = log(s0 / s1), r = 0.8, em1 = exp(-h) - 1.0;
    const float dpm_a = (float)(s1 / s0 - em1 * (1 + 0.5 / r)), dpm_b = (float)(em1 * (1 + 0.5 / r) * s0);
    const float dpm_d = (float)(em1 * 0.5 / r);
    const step_case cases[] = {
        {"cfg+noise+hist+aux", 1, 1, 2, 1, 0, 7.5f, 0.9f, -0.3f, 0.2f, {0.1f, -0.05f}, 1.0f, -2.0f},
        {"in-place no-cfg", 0, 0, 0, 0, 1, 0.0f, 1.0f, -0.8f, 0.0f, {}, 0.0f, 0.0f},
        {"euler", 1, 0, 0, 0, 1, 7.5f, 1.0f, euler_b, 0.0f, {}, 0.0f, 0.0f},
        {"euler-ancestral", 1, 1, 0, 0, 1, 5.0f, 1.0f, (float)(down - s0), (float)up, {}, 0.0f, 0.0f},
        {"ddim", 1, 0, 0, 0, 0, 7.5f, (float)ddim_a, (float)ddim_b, 0.0f, {}, 0.0f, 0.0f},
        {"dpm++2m", 1, 0, 1, 1, 1, 7.5f, dpm_a, dpm_b, 0.0f, {dpm_d}, 1.0f, (float)-s0},
        {"lms-order4", 1, 0, 4, 1, 0, 7.5f, 1.0f, 0.4f, 0.0f, {-0.2f, 0.15f, -0.05f, 0.01f}, 0.0f, 1.0f},
    };
    const dk_dtype types[] = {DK_F32, DK_F16, DK_BF16};
    for (const step_case &sc : cases)
        for (dk_dtype t : types) run(sc, 2 * 4 * 9 * 7 + 1, t, rng); // odd length
    run(cases[0], 3 * 4096 * 256 + 5, DK_F16, rng); // more elements than 4096 blocks x 256 threads: grid-stride

    dk_sampler_step_params bad = {};
    kt_expect(dk_sampler_step(&bad, nullptr) == cudaErrorInvalidValue, "sampler_step: NULL refused");
    return kt_finish("test_sampler_step", t0);
}
