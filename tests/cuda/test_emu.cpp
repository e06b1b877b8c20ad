/*
 * test_emu.cpp - the SIMT emulator itself (kernels/emu): fp16 conversions
 * against the compiler's _Float16, bf16 rounding against a float64 nearest
 * search, shuffles and ballot, the mma.sync m16n8k16 fragment layouts (fragments
 * built here from the PTX ISA tables, result against a float64 matmul), that
 * fibers really run in a shuffled order between barriers, that shared memory
 * is poisoned at every block start, ldmatrix.x4 (plain and .trans; misaligned
 * and non-shared rows refused), and that divergence, deadlock and bad
 * launches are reported instead of hanging.
 */
#include "dk_cuda.cuh"
#include "kt_common.h"

/* ---------------------------- conversions -------------------------------- */

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static unsigned short f16_ref(float f) {
    const _Float16 h = (_Float16)f; // GCC's conversion: round to nearest even
    unsigned short u;
    memcpy(&u, &h, 2);
    return u;
}
/* bf16 by searching the two neighbours in float64; ties to the even one. */
static unsigned short bf16_ref(float f) {
    const uint32_t u = bits_of(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0; // NaN: checked separately
    const unsigned short lo = (unsigned short)(u >> 16), hi = (unsigned short)(lo + 1);
    const double dlo = float_of((uint32_t)lo << 16), dhi = float_of((uint32_t)hi << 16), v = f;
    const double elo = fabs(v - dlo), ehi = isinf(dhi) && !isinf(dlo)
                                                ? fabs(v - 2.0 * dlo + float_of((uint32_t)(lo - 1) << 16))
                                                : fabs(dhi - v);
    if (elo < ehi) return lo;
    if (ehi < elo) return hi;
    return (lo & 1) ? hi : lo;
}

static void test_conversions(kt_rng &rng) {
    int bad_h2f = 0, bad_f2h = 0, bad_bf = 0;
    for (uint32_t h = 0; h < 65536; h++) { // every half to float, and back
        _Float16 hv;
        const unsigned short hs = (unsigned short)h;
        memcpy(&hv, &hs, 2);
        const float want = (float)hv, got = __half2float(__ushort_as_half(hs));
        if (isnan(want) ? !isnan(got) : bits_of(want) != bits_of(got)) bad_h2f++;
        if (!isnan(want) && __half_as_ushort(__float2half_rn(got)) != hs) bad_f2h++;
    }
    for (int i = 0; i < 400000; i++) { // random floats around the half range, plus exact ties
        float f;
        if (i % 4 == 0) {
            f = float_of((uint32_t)rng.next());
        } else if (i % 4 == 1) {
            f = (float)((rng.uniform() - 0.5) * 140000.0);
        } else if (i % 4 == 2) {
            f = (float)ldexp(rng.uniform() - 0.5, -(int)(rng.next() % 30)); // subnormal halves
        } else { // halfway between two adjacent halves (exact in float)
            const unsigned short a = (unsigned short)(rng.next() & 0x7bfe);
            f = 0.5f * (__half2float(__ushort_as_half(a)) + __half2float(__ushort_as_half((unsigned short)(a + 1))));
        }
        if (isnan(f)) continue;
        if (__half_as_ushort(__float2half_rn(f)) != f16_ref(f)) bad_f2h++;
        const float g = float_of((uint32_t)rng.next());
        if (!isnan(g) && __bfloat16_as_ushort(__float2bfloat16_rn(g)) != bf16_ref(g)) bad_bf++;
        const float t = float_of((bits_of(g) & 0xffff0000u) | 0x8000u); // an exact bf16 tie
        if (!isnan(t) && __bfloat16_as_ushort(__float2bfloat16_rn(t)) != bf16_ref(t)) bad_bf++;
    }
    kt_expect(bad_h2f == 0, "half -> float: %d of 65536 differ from _Float16", bad_h2f);
    kt_expect(bad_f2h == 0, "float -> half: %d differ from _Float16 (round to nearest even)", bad_f2h);
    kt_expect(bad_bf == 0, "float -> bf16: %d differ from the nearest-even reference", bad_bf);
    kt_expect(isnan(__half2float(__float2half_rn(NAN))) && isnan(__bfloat162float(__float2bfloat16_rn(NAN))),
              "NaN does not stay NaN");
    kt_expect(__half_as_ushort(__float2half_rn(65520.0f)) == 0x7c00 &&
                  __half_as_ushort(__float2half_rn(65519.99f)) == 0x7bff,
              "half overflow boundary");
}

/* ------------------------- shuffles and ballot --------------------------- */

__global__ void shuffle_kernel(int *out) {
    const int t = threadIdx.x, lane = t % 32, v = 1000 * t + 7;
    int *o = out + 6 * t;
    o[0] = __shfl_xor_sync(0xffffffffu, v, 5);
    o[1] = __shfl_down_sync(0xffffffffu, v, 3);
    o[2] = __shfl_up_sync(0xffffffffu, v, 2);
    o[3] = __shfl_sync(0xffffffffu, v, (lane * 7) % 32);
    o[4] = __shfl_down_sync(0xffffffffu, v, 3, 8); // within segments of 8 lanes
    o[5] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
}

static void test_shuffles() {
    const int n = 64;
    int *d = (int *)kt_alloc(6 * n, DK_F32);
    DK_LAUNCH(shuffle_kernel, dim3(1), dim3(n), 0, nullptr, d);
    kt_launch_ok((int)cudaGetLastError(), "shuffle kernel");
    std::vector<int> o(6 * n);
    cudaMemcpy(o.data(), d, o.size() * 4, cudaMemcpyDeviceToHost);
    unsigned ballot = 0;
    for (int l = 0; l < 32; l++)
        if (l % 3 == 0) ballot |= 1u << l;
    int bad = 0;
    for (int t = 0; t < n; t++) {
        const int lane = t % 32, w0 = t - lane;
        auto val = [&](int l) { return 1000 * (w0 + l) + 7; };
        const int want[6] = {
            val(lane ^ 5),        val(lane + 3 < 32 ? lane + 3 : lane),    val(lane >= 2 ? lane - 2 : lane),
            val((lane * 7) % 32), val(lane % 8 + 3 < 8 ? lane + 3 : lane), (int)ballot};
        for (int j = 0; j < 6; j++) bad += o[(size_t)(6 * t + j)] != want[j];
    }
    kt_expect(bad == 0, "shuffles/ballot: %d wrong values", bad);
    cudaFree(d);
}

/* -------------------------------- MMA ------------------------------------ */

/* The warp loads its fragments from a (16x16) row-major, b (16x8) row-major
 * (k, n) and c (16x8): for each matrix element, which lane and which register
 * half holds it, read off the PTX ISA figures for m16n8k16 (.f16/.bf16):
 * A: lane = 4*(row % 8) + (col % 8)/2, register = row/8 + 2*(col/8), half = col % 2;
 * B: lane = 4*n + (k % 8)/2, register = k/8, half = k % 2;
 * C: lane = 4*(row % 8) + col/2, element = 2*(row/8) + col % 2. */
template <class T> __global__ void mma_kernel(const T *a, const T *b, const float *c, float *d) {
    const int lane = threadIdx.x;
    uint32_t ra[4] = {0, 0, 0, 0}, rb[2] = {0, 0};
    float acc[4] = {0, 0, 0, 0};
    for (int row = 0; row < 16; row++)
        for (int col = 0; col < 16; col++)
            if (4 * (row % 8) + (col % 8) / 2 == lane)
                ra[row / 8 + 2 * (col / 8)] |= (uint32_t)dk::elem<T>::bits(a[row * 16 + col]) << (16 * (col % 2));
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < 8; n++)
            if (4 * n + (k % 8) / 2 == lane) rb[k / 8] |= (uint32_t)dk::elem<T>::bits(b[k * 8 + n]) << (16 * (k % 2));
    for (int row = 0; row < 16; row++)
        for (int col = 0; col < 8; col++)
            if (4 * (row % 8) + col / 2 == lane) acc[2 * (row / 8) + col % 2] = c[row * 8 + col];
    dk::mma_m16n8k16<T>(acc, ra, rb);
    for (int row = 0; row < 16; row++)
        for (int col = 0; col < 8; col++)
            if (4 * (row % 8) + col / 2 == lane) d[row * 8 + col] = acc[2 * (row / 8) + col % 2];
}

template <class T> static void test_mma(dk_dtype t, kt_rng &rng) {
    const std::vector<float> a = kt_rounded(rng.normals(256), t), b = kt_rounded(rng.normals(128), t);
    const std::vector<float> c = rng.normals(128);
    T *da = (T *)kt_to_device(a, t), *db = (T *)kt_to_device(b, t);
    float *dc = (float *)kt_to_device(c, DK_F32), *dd = (float *)kt_alloc(128, DK_F32);
    DK_LAUNCH((mma_kernel<T>), dim3(1), dim3(32), 0, nullptr, (const T *)da, (const T *)db, (const float *)dc, dd);
    char what[64];
    snprintf(what, sizeof what, "mma m16n8k16 %s", kt_dtype_name(t));
    if (kt_launch_ok((int)cudaGetLastError(), what)) {
        std::vector<double> ref(128);
        for (int r = 0; r < 16; r++)
            for (int n = 0; n < 8; n++) {
                double s = c[(size_t)(r * 8 + n)];
                for (int kk = 0; kk < 16; kk++) s += (double)a[(size_t)(r * 16 + kk)] * b[(size_t)(kk * 8 + n)];
                ref[(size_t)(r * 8 + n)] = s;
            }
        kt_expect_close(what, kt_download(dd, 128, DK_F32), ref, DK_F32);
    }
    cudaFree(da);
    cudaFree(db);
    cudaFree(dc);
    cudaFree(dd);
}

/* ldmatrix.x4: a shared (32 x 8) tile holds value 100*row + col; lane l names
 * row l of it, so matrix m is rows 8m..8m+7. The 64 elements of each 8x8
 * matrix, in row-major order (column-major with .trans), go to the lanes two
 * at a time: lane l holds elements 2l and 2l+1, the first in the low half. */
template <bool kTrans> __global__ void ldmatrix_kernel(unsigned *out, int misalign, int from_global) {
    DK_SHARED(unsigned short, tile, [32 * 8]);
    const int lane = threadIdx.x;
    for (int c = 0; c < 8; c++) tile[lane * 8 + c] = (unsigned short)(100 * lane + c);
    __syncwarp();
    uint32_t r[4];
    const void *row = from_global ? (const void *)(out + lane * 4) : (const void *)(tile + lane * 8 + misalign);
    dk::ldmatrix_x4<kTrans>(r, row);
    for (int m = 0; m < 4; m++) out[lane * 4 + m] = r[m];
}

static void test_ldmatrix() {
    unsigned *d = (unsigned *)kt_alloc(32 * 4, DK_F32);
    for (int trans = 0; trans < 2; trans++) {
        if (trans)
            DK_LAUNCH((ldmatrix_kernel<true>), dim3(1), dim3(32), 0, nullptr, d, 0, 0);
        else
            DK_LAUNCH((ldmatrix_kernel<false>), dim3(1), dim3(32), 0, nullptr, d, 0, 0);
        kt_launch_ok((int)cudaGetLastError(), "ldmatrix kernel");
        std::vector<unsigned> o(32 * 4);
        cudaMemcpy(o.data(), d, o.size() * 4, cudaMemcpyDeviceToHost);
        int bad = 0;
        for (int l = 0; l < 32; l++)
            for (int m = 0; m < 4; m++)
                for (int h = 0; h < 2; h++) {
                    const int e = 2 * l + h; // element index in the 8x8 matrix
                    const int row = trans ? e % 8 : e / 8, col = trans ? e / 8 : e % 8; // as stored
                    const unsigned want = (unsigned)(100 * (8 * m + row) + col);
                    bad += ((o[(size_t)(l * 4 + m)] >> (16 * h)) & 0xffffu) != want;
                }
        kt_expect(bad == 0, "ldmatrix.x4%s: %d of 256 elements misplaced", trans ? ".trans" : "", bad);
    }
    DK_LAUNCH((ldmatrix_kernel<false>), dim3(1), dim3(32), 0, nullptr, d, 1, 0);
    int rc = (int)cudaGetLastError();
    kt_expect(rc == cudaErrorLaunchFailure && strstr(emu_last_error_message(), "not 16-byte aligned"),
              "misaligned ldmatrix row: rc %d '%s'", rc, emu_last_error_message());
    DK_LAUNCH((ldmatrix_kernel<false>), dim3(1), dim3(32), 0, nullptr, d, 0, 1);
    rc = (int)cudaGetLastError();
    kt_expect(rc == cudaErrorLaunchFailure && strstr(emu_last_error_message(), "not inside a shared array"),
              "ldmatrix from global memory: rc %d '%s'", rc, emu_last_error_message());
    cudaFree(d);
}

/* ---------------------- order, barriers and poison ----------------------- */

/* Each thread takes a ticket before the barrier; after it, every thread must
 * see all tickets taken. order[t] = ticket of thread t. */
__global__ void order_kernel(int *order, int *counter, int *late) {
    order[threadIdx.x] = atomicAdd(counter, 1);
    __syncthreads();
    if (*counter != (int)blockDim.x) atomicAdd(late, 1);
}

static void test_order() {
    const int n = 128;
    int *d = (int *)kt_alloc(n + 2, DK_F32);
    for (int pass = 0; pass < 2; pass++) {
        emu_set_shuffle(pass == 0);
        cudaMemset(d + n, 0, 8);
        DK_LAUNCH(order_kernel, dim3(1), dim3(n), 0, nullptr, d, d + n, d + n + 1);
        kt_launch_ok((int)cudaGetLastError(), "order kernel");
        std::vector<int> o(n + 2);
        cudaMemcpy(o.data(), d, o.size() * 4, cudaMemcpyDeviceToHost);
        int in_order = 0;
        for (int t = 0; t < n; t++) in_order += o[(size_t)t] == t;
        if (pass == 0)
            kt_expect(in_order < n / 4, "shuffled order: %d of %d threads ran in thread order", in_order, n);
        else
            kt_expect(in_order == n, "EMU order linear: %d of %d threads in order", in_order, n);
        kt_expect(o[n + 1] == 0, "%d threads passed the barrier before all arrived", o[n + 1]);
    }
    emu_set_shuffle(1);
    cudaFree(d);
}

/* Block 0 writes its shared array; every block then reads it without writing. */
__global__ void poison_kernel(float *out) {
    DK_SHARED(float, s, [64]);
    if (blockIdx.x == 0) s[threadIdx.x] = 1.0f;
    __syncthreads();
    out[blockIdx.x * 64 + threadIdx.x] = s[(threadIdx.x + 1) % 64];
}

static void test_poison() {
    float *d = (float *)kt_alloc(128, DK_F32);
    DK_LAUNCH(poison_kernel, dim3(2), dim3(64), 0, nullptr, d);
    kt_launch_ok((int)cudaGetLastError(), "poison kernel");
    std::vector<float> o = kt_download(d, 128, DK_F32);
    int b0 = 0, b1 = 0;
    for (int i = 0; i < 64; i++) {
        b0 += o[(size_t)i] == 1.0f;
        b1 += isnan(o[(size_t)(64 + i)]);
    }
    kt_expect(b0 == 64, "block 0 lost its shared writes (%d of 64)", b0);
    kt_expect(b1 == 64, "block 1 read %d of 64 shared values not poisoned at block start", 64 - b1);
    cudaFree(d);
}

/* Dynamic shared memory: poisoned at block start, shared by the block. */
__global__ void dynamic_smem_kernel(float *out) {
    DK_SHARED_DYNAMIC(float, buf);
    const float before = buf[threadIdx.x];
    __syncthreads();
    buf[blockDim.x - 1 - threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = isnan(before) ? buf[threadIdx.x] : -1.0f;
}

static void test_dynamic_smem() {
    float *d = (float *)kt_alloc(96, DK_F32);
    DK_LAUNCH(dynamic_smem_kernel, dim3(2), dim3(96), 96 * sizeof(float), nullptr, d);
    kt_launch_ok((int)cudaGetLastError(), "dynamic shared memory kernel");
    const std::vector<float> o = kt_download(d, 96, DK_F32);
    int bad = 0;
    for (int t = 0; t < 96; t++) bad += o[(size_t)t] != (float)(95 - t);
    kt_expect(bad == 0, "dynamic shared memory: %d wrong (not poisoned at block 1's start, or not shared)", bad);
    cudaFree(d);
}

/* ------------------------- misuse is reported ---------------------------- */

__global__ void divergent_shfl_kernel(float *out) {
    float v = (float)threadIdx.x;
    if (threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffffu, v, 1); // half the warp never comes
    out[threadIdx.x] = v;
}
__global__ void split_warp_kernel(float *out) {
    float v = (float)threadIdx.x;
    if (threadIdx.x % 32 < 16)
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    else
        __syncthreads();
    out[threadIdx.x] = v;
}
__global__ void early_exit_kernel(float *out) {
    if (threadIdx.x >= 40) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}
__global__ void half_mask_kernel(float *out) {
    float v = (float)threadIdx.x;
    if (threadIdx.x < 16) v = __shfl_xor_sync(0x0000ffffu, v, 1); // a legal partial mask
    out[threadIdx.x] = v;
}

static void test_misuse() {
    float *d = (float *)kt_alloc(64, DK_F32);
    struct {
        void (*k)(float *);
        const char *name, *expect;
    } cases[] = {
        {divergent_shfl_kernel, "divergent shuffle", "has exited"},
        {split_warp_kernel, "warp split between shfl and barrier", "divergence"},
        {early_exit_kernel, "barrier after early exit", "exited"},
    };
    for (auto &c : cases) {
        DK_LAUNCH(c.k, dim3(1), dim3(64), 0, nullptr, d);
        const int rc = (int)cudaGetLastError();
        kt_expect(rc == cudaErrorLaunchFailure && strstr(emu_last_error_message(), c.expect), "%s: rc %d, message '%s'",
                  c.name, rc, emu_last_error_message());
    }
    DK_LAUNCH(half_mask_kernel, dim3(1), dim3(32), 0, nullptr, d);
    kt_launch_ok((int)cudaGetLastError(), "partial-mask shuffle");
    std::vector<float> o = kt_download(d, 32, DK_F32);
    kt_expect(o[0] == 1.0f && o[1] == 0.0f && o[20] == 20.0f, "partial-mask shuffle values");
    DK_LAUNCH(half_mask_kernel, dim3(1), dim3(2000), 0, nullptr, d);
    kt_expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "2000-thread block accepted");
    cudaFree(d);
}

int main(void) {
    const double t0 = kt_now();
    kt_rng rng(5);
    test_conversions(rng);
    test_shuffles();
    test_mma<__half>(DK_F16, rng);
    test_mma<__nv_bfloat16>(DK_BF16, rng);
    test_ldmatrix();
    test_order();
    test_poison();
    test_dynamic_smem();
    test_misuse();
    return kt_finish("test_cuda_emu", t0);
}
