/*
 * attention.cu - fused multi-head attention, flash-style: the kernels behind
 * bk_ops.attention (lib/backend.h). Scores live in registers (fp16/bf16) or
 * a 32-float row per warp (fp32); the (Sq, Sk) score matrix never reaches
 * global memory, and memory stays bounded for any sequence length.
 *
 * fp16/bf16: one block of 4 warps per 64 queries of one (batch, head); each
 * warp owns 16 query rows. Per key tile, S = Q K^T and O += P V run on tensor
 * cores (mma.sync m16n8k16, fp32 accumulation), with an online softmax in
 * between (running max and sum in fp32, exp2 with the scale folded in). The
 * head dim is padded with zeros to kDim, a multiple of 16.
 * fp32: a SIMT kernel for the fp32 validation mode (no tensor cores, no TF32).
 */
#include "dk_cuda.cuh"

#include <math.h>

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kBlockM = 16 * kWarps; // queries per block: one 16-row MMA tile per warp
constexpr float kLog2e = 1.4426950408889634f;

/* Keys per tile: 64, or 32 above head dim 96 so Q + K + V tiles stay within
 * the 48 KiB of static shared memory (kDim 160: 43 KiB). */
template <int kDim> struct attn_cfg {
    static_assert(kDim % 16 == 0 && kDim <= 160, "head dim padded to a multiple of 16, at most 160");
    static_assert((kDim / 8) % 2 == 0, "ldmatrix.x4 loads two 8-column tiles of V at a time");
    static constexpr int kBlockN = kDim > 96 ? 32 : 64;
    // Row stride of the smem tiles in elements: +8 (16 bytes) puts the 8 rows
    // one fragment load touches in 8 different 4-bank groups for every kDim here.
    static constexpr int kLd = kDim + 8;
};

/* Copies rows [r0, r0 + rows) of a (n, head_dim) matrix with row stride
 * @stride into @tile (rows x kDim, row stride kLd), zero past n and past
 * head_dim. @vec: head_dim, stride and the base are multiples of 8 elements
 * (16 bytes), so whole 16-byte chunks move at once. */
template <class T, int kDim, int kLd, int kRows>
__device__ __forceinline__ void load_tile(T *tile, const T *src, int r0, int n, int stride, int head_dim, bool vec) {
    const int tid = threadIdx.x;
    if (vec) {
        constexpr int kChunks = kDim / 8;
        for (int i = tid; i < kRows * kChunks; i += kThreads) {
            const int r = i / kChunks, c = i % kChunks * 8;
            T *dst = tile + r * kLd + c;
            if (r0 + r < n && c < head_dim) {
                dk::copy16(dst, src + (size_t)(r0 + r) * stride + c);
            } else {
                const T zero = dk::from_f32<T>(0.0f);
                for (int e = 0; e < 8; e++) dst[e] = zero;
            }
        }
    } else {
        const T zero = dk::from_f32<T>(0.0f);
        for (int i = tid; i < kRows * kDim; i += kThreads) {
            const int r = i / kDim, c = i % kDim;
            tile[r * kLd + c] = (r0 + r < n && c < head_dim) ? src[(size_t)(r0 + r) * stride + c] : zero;
        }
    }
}

template <class T, int kDim>
__global__ void __launch_bounds__(kThreads) attention_mma_kernel(dk_attention_params p, bool vec) {
    constexpr int kBlockN = attn_cfg<kDim>::kBlockN, kLd = attn_cfg<kDim>::kLd;
    constexpr int kSteps = kDim / 16; // k-steps of S = Q K^T
    constexpr int kNT = kBlockN / 8;  // 8-key column tiles of S
    constexpr int kDT = kDim / 8;     // 8-wide column tiles of O
    DK_SHARED(T, q_tile, [kBlockM * kLd]);
    DK_SHARED(T, k_tile, [kBlockN * kLd]);
    DK_SHARED(T, v_tile, [kBlockN * kLd]);

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int g = lane >> 2, t = lane & 3; // MMA groupID and threadID_in_group
    const int q0 = blockIdx.x * kBlockM;
    const int b = blockIdx.y / p.heads, h = blockIdx.y % p.heads;
    const int out_stride = p.out_stride ? p.out_stride : p.heads * p.head_dim;
    const T *q = static_cast<const T *>(p.q) + (size_t)b * p.sq * p.q_stride + (size_t)h * p.head_dim;
    const T *k = static_cast<const T *>(p.k) + (size_t)b * p.sk * p.kv_stride + (size_t)h * p.head_dim;
    const T *v = static_cast<const T *>(p.v) + (size_t)b * p.sk * p.kv_stride + (size_t)h * p.head_dim;
    T *out = static_cast<T *>(p.out) + (size_t)b * p.sq * out_stride + (size_t)h * p.head_dim;

    // Q tile (64, kDim), zero past sq and past head_dim.
    load_tile<T, kDim, kLd, kBlockM>(q_tile, q, q0, p.sq, p.q_stride, p.head_dim, vec);
    __syncthreads();

    // This warp's 16 rows as A fragments (rows g, g+8; columns 2t, 2t+1, +8):
    // the four 8x8 blocks of each 16x16 k-step, lane l naming row l % 16 of
    // column half l / 16.
    uint32_t qa[kSteps][4];
    for (int ks = 0; ks < kSteps; ks++)
        dk::ldmatrix_x4<false>(qa[ks], q_tile + (warp * 16 + lane % 16) * kLd + ks * 16 + lane / 16 * 8);

    float o[kDT][4];
    for (int dt = 0; dt < kDT; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    // Per row (g, g+8): running max of the log2-scaled scores and this
    // thread's part of the running sum (the quad's parts are added at the end).
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
    const float scale2 = p.scale * kLog2e;
    const int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    // Under the causal mask no key past the block's last query is visible.
    const int kv_end = p.causal ? (p.sk < q0 + kBlockM ? p.sk : q0 + kBlockM) : p.sk;

    for (int j0 = 0; j0 < kv_end; j0 += kBlockN) {
        load_tile<T, kDim, kLd, kBlockN>(k_tile, k, j0, p.sk, p.kv_stride, p.head_dim, vec);
        load_tile<T, kDim, kLd, kBlockN>(v_tile, v, j0, p.sk, p.kv_stride, p.head_dim, vec);
        __syncthreads();

        // S (16, kBlockN) = Q K^T: B[k = d][n = key] = K[key][d], so the B
        // fragment of (key tile nt, k-step ks) is the 8x8 blocks K[nt*8.., ks*16..]
        // and K[nt*8.., ks*16+8..] as stored; one ldmatrix.x4 serves tiles nt, nt+1.
        float s[kNT][4];
        for (int nt = 0; nt < kNT; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
        for (int nt = 0; nt < kNT; nt += 2)
            for (int ks = 0; ks < kSteps; ks++) {
                uint32_t kb[4];
                dk::ldmatrix_x4<false>(kb,
                                       k_tile + ((nt + lane / 16) * 8 + lane % 8) * kLd + ks * 16 + lane / 8 % 2 * 8);
                dk::mma_m16n8k16<T>(s[nt], qa[ks], kb);
                dk::mma_m16n8k16<T>(s[nt + 1], qa[ks], kb + 2);
            }

        // Mask, then the tile's row max (each row is spread over a quad of lanes).
        float mx[2] = {m_run[0], m_run[1]};
        for (int nt = 0; nt < kNT; nt++)
            for (int i = 0; i < 4; i++) {
                const int key = j0 + nt * 8 + 2 * t + (i & 1);
                float val = s[nt][i] * scale2;
                if (key >= p.sk || (p.causal && key > row[i >> 1])) val = -INFINITY;
                s[nt][i] = val;
                mx[i >> 1] = fmaxf(mx[i >> 1], val);
            }
        float m_use[2];
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            m_use[r] = mx[r] == -INFINITY ? 0.0f : mx[r]; // a row with nothing visible yet
            const float alpha = exp2f(m_run[r] - m_use[r]);
            m_run[r] = mx[r];
            l_run[r] *= alpha;
            for (int dt = 0; dt < kDT; dt++) {
                o[dt][2 * r] *= alpha;
                o[dt][2 * r + 1] *= alpha;
            }
        }
        // P = exp2(S - m), rounded to T here so the sum matches the weights P V uses.
        for (int nt = 0; nt < kNT; nt++)
            for (int i = 0; i < 4; i++) {
                const float pr = dk::to_f32(dk::from_f32<T>(exp2f(s[nt][i] - m_use[i >> 1])));
                s[nt][i] = pr;
                l_run[i >> 1] += pr;
            }

        // O (16, kDim) += P V: the C fragments of S tiles 2kk, 2kk+1 are the A
        // fragment of k-step kk; B[k = key][n = d] = V[key][d].
        for (int kk = 0; kk < kBlockN / 16; kk++) {
            const uint32_t pa[4] = {dk::pack2_f32<T>(s[2 * kk][0], s[2 * kk][1]),
                                    dk::pack2_f32<T>(s[2 * kk][2], s[2 * kk][3]),
                                    dk::pack2_f32<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    dk::pack2_f32<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            // B[k = key][n = d] = V[key][d]: the transposes of the 8x8 blocks
            // V[kk*16.., dt*8..] and V[kk*16+8.., dt*8..]; one ldmatrix.x4.trans
            // serves output tiles dt, dt+1.
            for (int dt = 0; dt < kDT; dt += 2) {
                uint32_t vb[4];
                dk::ldmatrix_x4<true>(vb,
                                      v_tile + (kk * 16 + lane / 8 % 2 * 8 + lane % 8) * kLd + (dt + lane / 16) * 8);
                dk::mma_m16n8k16<T>(o[dt], pa, vb);
                dk::mma_m16n8k16<T>(o[dt + 1], pa, vb + 2);
            }
        }
        __syncthreads(); // the next tile overwrites k_tile and v_tile
    }

    float inv[2];
    for (int r = 0; r < 2; r++) {
        l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
        l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
        inv[r] = l_run[r] > 0.0f ? 1.0f / l_run[r] : 0.0f;
    }
    for (int dt = 0; dt < kDT; dt++)
        for (int i = 0; i < 4; i++) {
            const int r = row[i >> 1], c = dt * 8 + 2 * t + (i & 1);
            if (r < p.sq && c < p.head_dim) out[(size_t)r * out_stride + c] = dk::from_f32<T>(o[dt][i] * inv[i >> 1]);
        }
}

/* fp32: one warp per query row, 8 rows per block; per tile of 32 keys lane j
 * scores key j, the warp folds the 32 scores into its running max/sum, and
 * lane l accumulates output dims l, l+32, ... */
constexpr int kF32Warps = 8;
constexpr int kF32Keys = 32;
constexpr int kF32MaxDim = 160;
constexpr int kF32Slots = kF32MaxDim / 32;

__global__ void __launch_bounds__(32 * kF32Warps) attention_f32_kernel(dk_attention_params p) {
    DK_SHARED(float, q_rows, [kF32Warps][kF32MaxDim]);
    DK_SHARED(float, k_tile, [kF32Keys][kF32MaxDim + 1]); // +1: lane j reading row j hits bank (j + d) % 32
    DK_SHARED(float, v_tile, [kF32Keys][kF32MaxDim]);
    DK_SHARED(float, probs, [kF32Warps][kF32Keys]);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, hd = p.head_dim;
    const int b = blockIdx.y / p.heads, h = blockIdx.y % p.heads;
    const int row = blockIdx.x * kF32Warps + warp;
    const int out_stride = p.out_stride ? p.out_stride : p.heads * hd;
    const float *q = static_cast<const float *>(p.q) + (size_t)b * p.sq * p.q_stride + (size_t)h * hd;
    const float *k = static_cast<const float *>(p.k) + (size_t)b * p.sk * p.kv_stride + (size_t)h * hd;
    const float *v = static_cast<const float *>(p.v) + (size_t)b * p.sk * p.kv_stride + (size_t)h * hd;
    float *out = static_cast<float *>(p.out) + (size_t)b * p.sq * out_stride + (size_t)h * hd;

    for (int d = lane; d < hd; d += 32) q_rows[warp][d] = row < p.sq ? q[(size_t)row * p.q_stride + d] : 0.0f;
    float o[kF32Slots] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    float m_run = -INFINITY, l_run = 0.0f;
    const int last_row = blockIdx.x * kF32Warps + kF32Warps - 1;
    const int kv_end = p.causal ? (p.sk < last_row + 1 ? p.sk : last_row + 1) : p.sk;

    for (int j0 = 0; j0 < kv_end; j0 += kF32Keys) {
        __syncthreads(); // q_rows written (first tile); the previous tile consumed
        for (int i = tid; i < kF32Keys * hd; i += 32 * kF32Warps) {
            const int r = i / hd, c = i % hd, key = j0 + r;
            k_tile[r][c] = key < p.sk ? k[(size_t)key * p.kv_stride + c] : 0.0f;
            v_tile[r][c] = key < p.sk ? v[(size_t)key * p.kv_stride + c] : 0.0f;
        }
        __syncthreads();

        const int key = j0 + lane;
        float sc = 0.0f;
        for (int d = 0; d < hd; d++) sc = fmaf(q_rows[warp][d], k_tile[lane][d], sc);
        sc *= p.scale;
        if (key >= p.sk || (p.causal && key > row)) sc = -INFINITY;
        float mx = sc;
        for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
        const float m_new = fmaxf(m_run, mx);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        const float pj = expf(sc - m_use), alpha = expf(m_run - m_use);
        l_run = l_run * alpha + dk::warp_sum(pj);
        m_run = m_new;
        probs[warp][lane] = pj;
        __syncwarp();
        for (int sl = 0; sl < kF32Slots; sl++) {
            const int d = lane + 32 * sl;
            if (d >= hd) break;
            float acc = o[sl] * alpha;
            for (int j = 0; j < kF32Keys; j++) acc = fmaf(probs[warp][j], v_tile[j][d], acc);
            o[sl] = acc;
        }
        __syncwarp(); // probs is rewritten by the next tile
    }
    if (row < p.sq) {
        const float inv = l_run > 0.0f ? 1.0f / l_run : 0.0f;
        for (int sl = 0; sl < kF32Slots; sl++) {
            const int d = lane + 32 * sl;
            if (d < hd) out[(size_t)row * out_stride + d] = o[sl] * inv;
        }
    }
}

template <class T, int kDim> int launch_mma(const dk_attention_params *p, cudaStream_t stream) {
    // 16-byte tile loads when every row start is 16-byte aligned.
    const bool vec = p->head_dim % 8 == 0 && p->q_stride % 8 == 0 && p->kv_stride % 8 == 0 &&
                     (uintptr_t)p->q % 16 == 0 && (uintptr_t)p->k % 16 == 0 && (uintptr_t)p->v % 16 == 0;
    DK_LAUNCH((attention_mma_kernel<T, kDim>), dim3(dk::ceil_div(p->sq, kBlockM), p->batch * p->heads), dim3(kThreads),
              0, stream, *p, vec);
    return (int)cudaGetLastError();
}

/* The smallest padded head dim that holds @p's. */
template <class T> int launch_mma_dim(const dk_attention_params *p, cudaStream_t stream) {
    const int d = p->head_dim;
    if (d <= 48) return launch_mma<T, 48>(p, stream);
    if (d <= 64) return launch_mma<T, 64>(p, stream);
    if (d <= 80) return launch_mma<T, 80>(p, stream);
    if (d <= 96) return launch_mma<T, 96>(p, stream);
    if (d <= 128) return launch_mma<T, 128>(p, stream);
    return launch_mma<T, 160>(p, stream);
}

} // namespace

extern "C" int dk_attention(const dk_attention_params *p, cudaStream_t stream) {
    DK_CHECK_ARG(p && p->q && p->k && p->v && p->out);
    DK_CHECK_ARG(p->batch > 0 && p->sq > 0 && p->sk > 0 && p->heads > 0);
    DK_CHECK_ARG(p->head_dim > 0 && p->head_dim <= 160);
    DK_CHECK_ARG(p->q_stride >= p->heads * p->head_dim && p->kv_stride >= p->heads * p->head_dim);
    DK_CHECK_ARG(p->out_stride == 0 || p->out_stride >= p->heads * p->head_dim);
    DK_CHECK_ARG(p->batch * p->heads <= 65535);
    switch (p->dtype) {
    case DK_F32: {
        DK_LAUNCH(attention_f32_kernel, dim3(dk::ceil_div(p->sq, kF32Warps), p->batch * p->heads), dim3(32 * kF32Warps),
                  0, stream, *p);
        return (int)cudaGetLastError();
    }
    case DK_F16: return launch_mma_dim<__half>(p, stream);
    case DK_BF16: return launch_mma_dim<__nv_bfloat16>(p, stream);
    }
    return (int)cudaErrorInvalidValue;
}
