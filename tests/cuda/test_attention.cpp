/*
 * test_attention.cpp - dk_attention on the SIMT emulator against a float64
 * reference: fp16 and bf16 (tensor-core kernel) and fp32 (SIMT kernel), every
 * SD head dim (40, 64, 80, 160) plus odd ones, self-attention with sequence
 * lengths that are not multiples of the 64-query / 32- or 64-key tiles,
 * cross-attention with 77 keys, the causal mask, q/k/v strided inside one
 * fused projection, and one 300-token self-attention.
 */
#include "kt_common.h"

/* One attention problem; q, k, v are views into one (B, S, 3*heads*hd) buffer
 * when fused, else three (B, S, heads*hd) buffers. */
struct attn_case {
    int batch, sq, sk, heads, head_dim, causal, fused;
    int out_pad; /* out rows of heads*head_dim + out_pad elements; the padding must stay untouched */
};

/* float64 softmax(scale q k^T) v per (b, h), from the rounded inputs. */
static std::vector<double> reference(const attn_case &c, const std::vector<float> &q, const std::vector<float> &k,
                                     const std::vector<float> &v, int q_stride, int kv_stride, float scale) {
    const int hd = c.head_dim, width = c.heads * hd;
    std::vector<double> out((size_t)c.batch * c.sq * width), s((size_t)c.sk);
    for (int b = 0; b < c.batch; b++)
        for (int h = 0; h < c.heads; h++)
            for (int i = 0; i < c.sq; i++) {
                const float *qi = &q[((size_t)b * c.sq + i) * q_stride + (size_t)h * hd];
                double mx = -INFINITY;
                for (int j = 0; j < c.sk; j++) {
                    const float *kj = &k[((size_t)b * c.sk + j) * kv_stride + (size_t)h * hd];
                    double d = 0.0;
                    for (int e = 0; e < hd; e++) d += (double)qi[e] * kj[e];
                    s[j] = (c.causal && j > i) ? -INFINITY : d * scale;
                    if (s[j] > mx) mx = s[j];
                }
                double sum = 0.0;
                for (int j = 0; j < c.sk; j++) sum += (s[j] = exp(s[j] - mx));
                double *o = &out[((size_t)b * c.sq + i) * width + (size_t)h * hd];
                for (int e = 0; e < hd; e++) o[e] = 0.0;
                for (int j = 0; j < c.sk; j++) {
                    const float *vj = &v[((size_t)b * c.sk + j) * kv_stride + (size_t)h * hd];
                    for (int e = 0; e < hd; e++) o[e] += s[j] / sum * vj[e];
                }
            }
    return out;
}

static void run_case(const attn_case &c, dk_dtype t, kt_rng &rng) {
    const int hd = c.head_dim, width = c.heads * hd;
    const int q_stride = c.fused ? 3 * width : width, kv_stride = q_stride;
    const float scale = 1.0f / sqrtf((float)hd);
    std::vector<float> q, k, v;
    void *dq, *dk, *dv, *dbuf = nullptr;
    size_t koff = 0, voff = 0;
    if (c.fused) { // one (B, S, 3*width) buffer: q | k | v per row (self-attention only)
        std::vector<float> qkv = kt_rounded(rng.normals((size_t)c.batch * c.sq * 3 * width), t);
        q = k = v = qkv;
        dbuf = kt_to_device(qkv, t);
        koff = (size_t)width;
        voff = (size_t)2 * width;
        dq = dbuf;
        dk = (char *)dbuf + koff * kt_dtype_size(t);
        dv = (char *)dbuf + voff * kt_dtype_size(t);
    } else {
        q = kt_rounded(rng.normals((size_t)c.batch * c.sq * width), t);
        k = kt_rounded(rng.normals((size_t)c.batch * c.sk * width), t);
        v = kt_rounded(rng.normals((size_t)c.batch * c.sk * width), t);
        dq = kt_to_device(q, t);
        dk = kt_to_device(k, t);
        dv = kt_to_device(v, t);
    }
    const int out_stride = width + c.out_pad;
    const size_t nout = (size_t)c.batch * c.sq * out_stride;
    void *dout = kt_alloc(nout, t);
    dk_attention_params p = {};
    p.q = dq;
    p.k = dk;
    p.v = dv;
    p.out = dout;
    p.batch = c.batch;
    p.sq = c.sq;
    p.sk = c.sk;
    p.heads = c.heads;
    p.head_dim = hd;
    p.q_stride = q_stride;
    p.kv_stride = kv_stride;
    p.out_stride = c.out_pad ? out_stride : 0;
    p.scale = scale;
    p.causal = c.causal;
    p.dtype = t;
    char what[160];
    snprintf(what, sizeof what, "attention %s b=%d sq=%d sk=%d heads=%d hd=%d%s%s%s", kt_dtype_name(t), c.batch, c.sq,
             c.sk, c.heads, hd, c.causal ? " causal" : "", c.fused ? " fused-qkv" : "", c.out_pad ? " out-stride" : "");
    if (kt_launch_ok(dk_attention(&p, nullptr), what)) {
        const std::vector<float> padded = kt_download(dout, nout, t);
        std::vector<float> out;
        int pad_written = 0;
        for (size_t r = 0; r < (size_t)c.batch * c.sq; r++)
            for (int e = 0; e < out_stride; e++) {
                const float val = padded[r * out_stride + (size_t)e];
                if (e < width)
                    out.push_back(val);
                else
                    pad_written += !isnan(val); // still the 0xff poison?
            }
        kt_expect(pad_written == 0, "%s: %d values written into the row padding", what, pad_written);
        const std::vector<float> kk(k.begin() + (long)koff, k.end()), vv(v.begin() + (long)voff, v.end());
        kt_expect_close(what, out, reference(c, q, c.fused ? kk : k, c.fused ? vv : v, q_stride, kv_stride, scale), t);
    }
    if (c.fused) {
        cudaFree(dbuf);
    } else {
        cudaFree(dq);
        cudaFree(dk);
        cudaFree(dv);
    }
    cudaFree(dout);
}

int main(void) {
    kt_require_device();
    const double t0 = kt_now();
    kt_rng rng(7);
    const dk_dtype types[] = {DK_F16, DK_BF16, DK_F32};
    const int dims[] = {40, 64, 80, 160};
    for (dk_dtype t : types)
        for (int hd : dims) {
            run_case({1, 67, 67, 2, hd, 0, 0, 0}, t, rng); // self: 67 = 64 + 3 queries and keys
            run_case({2, 70, 77, 1, hd, 0, 0, 0}, t, rng); // cross: 77 text tokens
            run_case({1, 50, 50, 1, hd, 1, 0, 0}, t, rng); // causal (CLIP text)
        }
    for (dk_dtype t : types) {
        run_case({1, 33, 33, 2, 64, 0, 1, 0}, t, rng);  // q, k, v inside one fused projection
        run_case({1, 19, 77, 3, 8, 0, 0, 0}, t, rng);   // odd head dims, padded inside the kernel
        run_case({1, 20, 13, 1, 100, 1, 0, 0}, t, rng); // sk < sq under the causal mask
        run_case({2, 21, 30, 2, 40, 0, 0, 7}, t, rng);  // output rows with a stride of their own
    }
    run_case({1, 300, 300, 1, 64, 0, 0, 0}, DK_F16, rng); // a longer self-attention: 5 query blocks x 5 key tiles
    run_case({1, 300, 300, 1, 64, 0, 0, 0}, DK_BF16, rng);

    // refused arguments
    dk_attention_params bad = {};
    kt_expect(dk_attention(&bad, nullptr) == cudaErrorInvalidValue, "NULL pointers refused");
    return kt_finish("test_attention", t0);
}
