/*
 * cuda_emu.cpp - runtime of the SIMT emulator (see cuda_emu.h for what it
 * promises): fp16/bf16 conversions, guarded device memory, the fiber
 * scheduler that runs one block at a time, warp collectives including the
 * m16n8k16 tensor-core MMA, and the few CUDA runtime calls the kernels and
 * their tests make. Single OS thread; nothing here is thread-safe.
 */
#include "cuda_emu.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <string>
#include <vector>

uint3 blockIdx;
dim3 blockDim, gridDim;
static uint3 g_idle_tid;
uint3 *emu_thread_idx = &g_idle_tid;

namespace emu {

/* ======================= fp16 / bf16 conversions ========================= */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

unsigned short float_to_half_bits(float f) {
    const uint32_t x = f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (unsigned short)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu)); /* NaN stays NaN */
    if (ax >= 0x38800000u) {                 /* >= 2^-14: a normal half, or overflow */
        const uint32_t r = ax - 0x38000000u; /* exponent rebiased from 127 to 15 */
        uint32_t h = r >> 13;
        const uint32_t rem = r & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
        if (h >= 0x7c00u) h = 0x7c00u; /* to infinity (float inf lands here too) */
        return (unsigned short)(sign | h);
    }
    if (ax <= 0x33000000u) return (unsigned short)sign; /* <= 2^-25 rounds to zero (the tie goes to even) */
    /* half subnormal: value / 2^-24 = m * 2^(e - 126) */
    const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e; /* 14 .. 24 */
    uint32_t h = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (h & 1u))) h++;
    return (unsigned short)(sign | h);
}

float half_bits_to_float(unsigned short h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        const float v = (float)m * (1.0f / 16777216.0f); /* exact: m < 2^10 */
        return sign ? -v : v;
    }
    if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

unsigned short float_to_bf16_bits(float f) {
    const uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((x >> 16) | 0x40u);
    return (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

float bf16_bits_to_float(unsigned short h) { return bits_f32((uint32_t)h << 16); }

/* ============================ reporting ================================== */

static cudaError_t g_last_error = cudaSuccess;
static std::string g_message;
static uint64_t g_launches, g_blocks, g_switches;

static void set_error(cudaError_t e, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (g_last_error == cudaSuccess) g_last_error = e;
    g_message = buf;
    fprintf(stderr, "emu: %s\n", buf);
}

/* ========================= guarded device memory ========================= */

/* One mapping per allocation: [guard page][head canary | data | tail canary][guard page].
 * The data ends at the last 256-byte boundary before the tail guard, so a
 * write just past the end lands in the tail canary (reported after the
 * launch) or, when the size is a multiple of 256, in the guard page (reported
 * at once); writes before the start land in the head canary. */
struct allocation {
    uint8_t *map;     /* mapping start */
    size_t map_bytes; /* whole mapping incl. guard pages */
    uint8_t *user;    /* what cudaMalloc returned */
    size_t bytes;     /* what was asked for */
    uint8_t *lo, *hi; /* canary-covered range [lo, hi) between the guard pages */
    int id;           /* 1, 2, ... in allocation order */
};
static std::vector<allocation> g_allocs;
static int g_next_alloc_id = 1;
static uint64_t g_live_bytes, g_peak_bytes, g_device_limit; /* emu_memory, emu_set_device_memory */

static size_t page_size() {
    static size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    return ps;
}
static uint8_t canary_byte(size_t i) { return (uint8_t)(0x5au + 0x1du * (unsigned)(i & 0xff)); }

static const allocation *find_alloc_near(const void *addr) {
    const uint8_t *a = (const uint8_t *)addr;
    for (const allocation &al : g_allocs)
        if (a >= al.map && a < al.map + al.map_bytes) return &al;
    return nullptr;
}

/* Describes @addr relative to allocation @al into @buf. */
static void describe_offset(const allocation &al, const uint8_t *addr, char *buf, size_t n) {
    if (addr >= al.user + al.bytes)
        snprintf(buf, n, "%zu bytes past the end of allocation #%d (%zu bytes)", (size_t)(addr - (al.user + al.bytes)),
                 al.id, al.bytes);
    else if (addr < al.user)
        snprintf(buf, n, "%zu bytes before the start of allocation #%d (%zu bytes)", (size_t)(al.user - addr), al.id,
                 al.bytes);
    else
        snprintf(buf, n, "byte %zu of allocation #%d (%zu bytes)", (size_t)(addr - al.user), al.id, al.bytes);
}

/* Returns 1 and reports when @al's canaries were overwritten, then restores
 * them so one bad write is reported once. @when says where it was found. */
static int check_alloc(const allocation &al, const char *when) {
    for (uint8_t *p = al.lo; p < al.hi; p++) {
        if (p == al.user) {
            p = al.user + al.bytes - 1;
            continue;
        }
        if (*p != canary_byte((size_t)(p - al.lo))) {
            char where[160];
            describe_offset(al, p, where, sizeof where);
            set_error(cudaErrorIllegalAddress, "out-of-range write %s: %s", when, where);
            for (uint8_t *q = al.lo; q < al.user; q++) *q = canary_byte((size_t)(q - al.lo));
            for (uint8_t *q = al.user + al.bytes; q < al.hi; q++) *q = canary_byte((size_t)(q - al.lo));
            return 1;
        }
    }
    return 0;
}

static int check_all_allocs(const char *when) {
    int bad = 0;
    for (const allocation &al : g_allocs) bad += check_alloc(al, when);
    return bad;
}

} // namespace emu

using namespace emu;

extern "C" void *emu_malloc(size_t bytes) {
    if (bytes > SIZE_MAX / 2) return nullptr;
    const size_t ps = page_size();
    const size_t rounded = (bytes + 255) / 256 * 256;
    const size_t data_pages = (rounded + 256 + ps - 1) / ps * ps; /* >= 256 bytes of head canary */
    const size_t map_bytes = data_pages + 2 * ps;
    void *m = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    uint8_t *map = (uint8_t *)m;
    mprotect(map, ps, PROT_NONE);
    mprotect(map + ps + data_pages, ps, PROT_NONE);
    allocation al;
    al.map = map;
    al.map_bytes = map_bytes;
    al.lo = map + ps;
    al.hi = map + ps + data_pages;
    al.user = al.hi - rounded;
    al.bytes = bytes;
    al.id = g_next_alloc_id++;
    for (uint8_t *p = al.lo; p < al.hi; p++) *p = canary_byte((size_t)(p - al.lo));
    memset(al.user, 0xff, bytes); /* fresh device memory reads as NaN */
    g_allocs.push_back(al);
    g_live_bytes += bytes;
    if (g_live_bytes > g_peak_bytes) g_peak_bytes = g_live_bytes;
    return al.user;
}

extern "C" void emu_free(void *p) {
    if (!p) return;
    for (size_t i = 0; i < g_allocs.size(); i++)
        if (g_allocs[i].user == p) {
            check_alloc(g_allocs[i], "found at free");
            munmap(g_allocs[i].map, g_allocs[i].map_bytes);
            g_live_bytes -= g_allocs[i].bytes;
            g_allocs.erase(g_allocs.begin() + (long)i);
            return;
        }
    set_error(cudaErrorInvalidValue, "cudaFree of %p, which is not a live allocation", p);
}

extern "C" int emu_check_canaries(void) { return check_all_allocs("found by emu_check_canaries"); }

/* ============================== fibers =================================== */

namespace emu {

enum fiber_state { RUNNABLE, AT_BARRIER, AT_WARP, EXITED };

struct fiber {
    ucontext_t ctx;
    uint3 tid;
    int linear, warp, lane;
    fiber_state state;
    const char *file; /* where it waits */
    int line;
    /* the warp collective it waits at */
    collective kind;
    unsigned mask;
    shfl_mode mode;
    int arg, width;
    uint64_t payload, result;
    const uint32_t *a, *b; /* mma fragments */
    float *d;
    const void *row; /* ldmatrix: this lane's row address */
    uint32_t *r;     /* ldmatrix: the lane's 4 registers */
};

static const size_t kStackBytes = 128 * 1024;
static const size_t kStackPoison = 4096; /* top of each stack filled with 0xff: uninitialised locals read NaN */

static std::vector<fiber> g_fibers;
static std::vector<uint8_t *> g_stacks;
static ucontext_t g_sched_ctx;
static fiber *g_cur;
static bool g_failed; /* the running launch hit an error: stop scheduling */
static void (*g_body)(void *);
static void *g_body_ctx;
static const char *g_kernel_name = "";
static bool g_in_kernel;
static uint64_t g_seed = 1, g_rng;
static bool g_seed_read, g_shuffle = true;
static std::vector<std::pair<void *, size_t>> g_shared; /* DK_SHARED arrays */
static std::vector<uint8_t> g_dyn_smem;

static uint64_t rng_next() { /* splitmix64 */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static const char *coll_name(collective k) {
    switch (k) {
    case COLL_SHFL: return "__shfl_*_sync";
    case COLL_SYNCWARP: return "__syncwarp";
    case COLL_BALLOT: return "__ballot_sync";
    case COLL_MMA_F16: return "mma.sync m16n8k16 f16";
    case COLL_MMA_BF16: return "mma.sync m16n8k16 bf16";
    case COLL_LDMATRIX: return "ldmatrix.x4";
    }
    return "?";
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path ? path : "?", '/');
    return s ? s + 1 : (path ? path : "?");
}

static void yield_to_scheduler() {
    fiber *f = g_cur;
    g_switches++;
    swapcontext(&f->ctx, &g_sched_ctx);
}

static void fiber_entry() {
    g_body(g_body_ctx);
    g_cur->state = EXITED;
    yield_to_scheduler();
    abort(); /* an exited fiber is never resumed */
}

/* --- SIGSEGV: a guard page (or anything else) hit inside a kernel -------- */

static void on_fault(int sig, siginfo_t *si, void *) {
    if (!g_in_kernel) {
        signal(sig, SIG_DFL);
        return; /* re-executes the access, now with the default action */
    }
    char buf[512], where[200] = "not near any cudaMalloc allocation";
    const allocation *al = find_alloc_near(si->si_addr);
    if (al) describe_offset(*al, (const uint8_t *)si->si_addr, where, sizeof where);
    const uint3 t = g_cur ? g_cur->tid : uint3{0, 0, 0};
    int n = snprintf(buf, sizeof buf,
                     "emu: invalid memory access at %p (%s) in kernel %s, block (%u,%u,%u) thread (%u,%u,%u)\n",
                     si->si_addr, where, g_kernel_name, blockIdx.x, blockIdx.y, blockIdx.z, t.x, t.y, t.z);
    if (n > 0) {
        ssize_t w = write(2, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
        (void)w;
    }
    _exit(86);
}

static void install_fault_handler() {
    static bool done;
    if (done) return;
    done = true;
    static uint8_t alt[64 * 1024];
    stack_t ss;
    ss.ss_sp = alt;
    ss.ss_size = sizeof alt;
    ss.ss_flags = 0;
    sigaltstack(&ss, nullptr);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
}

/* --- collectives (called on a fiber) ------------------------------------- */

static void fiber_fail(const char *fmt, const char *detail) {
    set_error(cudaErrorLaunchFailure, fmt, g_kernel_name, blockIdx.x, blockIdx.y, blockIdx.z, g_cur->tid.x, detail);
    g_failed = true;
    yield_to_scheduler();
    abort();
}

void syncthreads(const char *file, int line) {
    g_cur->state = AT_BARRIER;
    g_cur->file = file;
    g_cur->line = line;
    yield_to_scheduler();
}

static void warp_wait(collective kind, unsigned mask, const char *file, int line) {
    fiber *f = g_cur;
    if (!(mask >> f->lane & 1u))
        fiber_fail("kernel %s block (%u,%u,%u): thread %u calls a warp collective (%s) with a mask "
                   "that leaves out its own lane",
                   coll_name(kind));
    f->state = AT_WARP;
    f->kind = kind;
    f->mask = mask;
    f->file = file;
    f->line = line;
    yield_to_scheduler();
}

uint64_t shfl(unsigned mask, uint64_t v, shfl_mode mode, int arg, int width, const char *file, int line) {
    if (width <= 0 || width > 32 || (width & (width - 1)))
        fiber_fail("kernel %s block (%u,%u,%u): thread %u: %s width must be a power of two <= 32", "__shfl_*_sync");
    g_cur->payload = v;
    g_cur->mode = mode;
    g_cur->arg = arg;
    g_cur->width = width;
    warp_wait(COLL_SHFL, mask, file, line);
    return g_cur->result;
}

void syncwarp(unsigned mask, const char *file, int line) { warp_wait(COLL_SYNCWARP, mask, file, line); }

unsigned ballot(unsigned mask, int pred, const char *file, int line) {
    g_cur->payload = pred != 0;
    warp_wait(COLL_BALLOT, mask, file, line);
    return (unsigned)g_cur->result;
}

void mma_m16n8k16(collective kind, float d[4], const uint32_t a[4], const uint32_t b[2]) {
    g_cur->a = a;
    g_cur->b = b;
    g_cur->d = d;
    warp_wait(kind, 0xffffffffu, "mma", 0);
}

void ldmatrix_x4(uint32_t r[4], const void *row, bool trans) {
    g_cur->row = row;
    g_cur->r = r;
    g_cur->arg = trans;
    warp_wait(COLL_LDMATRIX, 0xffffffffu, "ldmatrix", 0);
}

void shared_register(void *p, size_t bytes) {
    g_shared.push_back({p, bytes});
    memset(p, 0xff, bytes);
}

void *dynamic_shared() { return g_dyn_smem.data(); }

/* --- resolving a warp's collective (on the scheduler) -------------------- */

static float frag_to_float(collective kind, uint16_t bits) {
    return kind == COLL_MMA_F16 ? half_bits_to_float(bits) : bf16_bits_to_float(bits);
}

/* PTX ISA "Matrix Fragments for mma.m16n8k16 with floating point type":
 * groupID g = lane >> 2, threadID_in_group t = lane % 4;
 * A (16x16, row): element i of a0..a7 (reg i/2, low half first) at
 *   row g + 8 * ((i >> 1) & 1), col 2t + (i & 1) + 8 * (i >> 2);
 * B (16x8, col): element i of b0..b3 at row 2t + (i & 1) + 8 * (i >> 1), col g;
 * C, D (16x8 f32): element i of c0..c3 at row g + 8 * (i >> 1), col 2t + (i & 1). */
static void resolve_mma(fiber **lanes, collective kind) {
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; l++) {
        const fiber *f = lanes[l];
        const int g = l >> 2, t = l & 3;
        for (int i = 0; i < 8; i++) {
            const uint16_t bits = (uint16_t)(f->a[i >> 1] >> (16 * (i & 1)));
            A[g + 8 * ((i >> 1) & 1)][2 * t + (i & 1) + 8 * (i >> 2)] = frag_to_float(kind, bits);
        }
        for (int i = 0; i < 4; i++) {
            const uint16_t bits = (uint16_t)(f->b[i >> 1] >> (16 * (i & 1)));
            B[2 * t + (i & 1) + 8 * (i >> 1)][g] = frag_to_float(kind, bits);
        }
        for (int i = 0; i < 4; i++) C[g + 8 * (i >> 1)][2 * t + (i & 1)] = f->d[i];
    }
    for (int l = 0; l < 32; l++) {
        const int g = l >> 2, t = l & 3;
        for (int i = 0; i < 4; i++) {
            const int r = g + 8 * (i >> 1), c = 2 * t + (i & 1);
            float acc = C[r][c];
            for (int k = 0; k < 16; k++) acc += A[r][k] * B[k][c];
            lanes[l]->d[i] = acc;
        }
    }
}

/* Whether [p, p + n) lies in one shared array or in the dynamic shared memory. */
static bool in_shared(const void *p, size_t n) {
    const uint8_t *a = (const uint8_t *)p;
    for (const auto &s : g_shared)
        if (a >= (const uint8_t *)s.first && a + n <= (const uint8_t *)s.first + s.second) return true;
    return !g_dyn_smem.empty() && a >= g_dyn_smem.data() && a + n <= g_dyn_smem.data() + g_dyn_smem.size();
}

static void warp_report(int w, int nthreads, const char *what);

/* ldmatrix.x4: matrix m's row i comes from lane 8m + i's address. Returns
 * false (after a report) for a row that is misaligned or not in shared memory. */
static bool resolve_ldmatrix(fiber **lanes, int w, int nthreads) {
    uint16_t M[4][8][8];
    for (int m = 0; m < 4; m++)
        for (int i = 0; i < 8; i++) {
            const fiber *f = lanes[8 * m + i];
            if ((uintptr_t)f->row % 16 != 0 || !in_shared(f->row, 16)) {
                char what[160];
                snprintf(what, sizeof what, "ldmatrix: lane %d's row address %p is %s", 8 * m + i, f->row,
                         (uintptr_t)f->row % 16 ? "not 16-byte aligned" : "not inside a shared array");
                warp_report(w, nthreads, what);
                return false;
            }
            memcpy(M[m][i], f->row, 16);
        }
    for (int l = 0; l < 32; l++) {
        const int g = l >> 2, t = l & 3;
        const bool trans = lanes[l]->arg != 0;
        for (int m = 0; m < 4; m++)
            lanes[l]->r[m] = trans ? (uint32_t)M[m][2 * t][g] | (uint32_t)M[m][2 * t + 1][g] << 16
                                   : (uint32_t)M[m][g][2 * t] | (uint32_t)M[m][g][2 * t + 1] << 16;
    }
    return true;
}

static void lane_list(unsigned bits, char *buf, size_t n) {
    size_t o = 0;
    buf[0] = 0;
    for (int l = 0; l < 32 && o + 8 < n;) {
        if (!(bits >> l & 1u)) {
            l++;
            continue;
        }
        int e = l;
        while (e + 1 < 32 && (bits >> (e + 1) & 1u)) e++;
        o += (size_t)snprintf(buf + o, n - o, o ? ",%d" : "%d", l);
        if (e > l) o += (size_t)snprintf(buf + o, n - o, "-%d", e);
        l = e + 1;
    }
}

static void warp_report(int w, int nthreads, const char *what) {
    char line[1024];
    int o = snprintf(line, sizeof line, "kernel %s block (%u,%u,%u) warp %d: %s;", g_kernel_name, blockIdx.x,
                     blockIdx.y, blockIdx.z, w, what);
    /* group the warp's lanes by where they are */
    unsigned seen = 0;
    for (int l = 0; l < 32 && o < (int)sizeof line - 100; l++) {
        const int i = w * 32 + l;
        if (i >= nthreads || (seen >> l & 1u)) continue;
        const fiber &f = g_fibers[(size_t)i];
        unsigned same = 0;
        for (int m = l; m < 32 && w * 32 + m < nthreads; m++) {
            const fiber &h = g_fibers[(size_t)(w * 32 + m)];
            if (h.state == f.state && (f.state == EXITED || (h.file == f.file && h.line == f.line)) &&
                (f.state != AT_WARP || h.kind == f.kind))
                same |= 1u << m;
        }
        seen |= same;
        char lanes[160];
        lane_list(same, lanes, sizeof lanes);
        if (f.state == EXITED)
            o += snprintf(line + o, sizeof line - (size_t)o, " lanes %s exited;", lanes);
        else if (f.state == AT_BARRIER)
            o += snprintf(line + o, sizeof line - (size_t)o, " lanes %s at __syncthreads (%s:%d);", lanes,
                          base_name(f.file), f.line);
        else if (f.state == AT_WARP)
            o += snprintf(line + o, sizeof line - (size_t)o, " lanes %s at %s (%s:%d);", lanes, coll_name(f.kind),
                          base_name(f.file), f.line);
        else
            o += snprintf(line + o, sizeof line - (size_t)o, " lanes %s running;", lanes);
    }
    set_error(cudaErrorLaunchFailure, "%s", line);
    g_failed = true;
}

/* Completes every collective of warp @w all of whose lanes have arrived.
 * Returns whether any did; on misuse reports and sets g_failed. */
static bool resolve_warp(int w, int nthreads) {
    bool progress = false;
    {
        unsigned done = 0;
        for (int l = 0; l < 32; l++) {
            const int i = w * 32 + l;
            if (i >= nthreads) break;
            fiber &f = g_fibers[(size_t)i];
            if (f.state != AT_WARP || (done >> l & 1u)) continue;
            const unsigned mask = f.mask;
            fiber *lanes[32] = {};
            bool ready = true;
            for (int m = 0; m < 32 && ready; m++) {
                if (!(mask >> m & 1u)) continue;
                const int j = w * 32 + m;
                if (j >= nthreads) {
                    warp_report(w, nthreads, "the mask names a lane past the end of the block");
                    return false;
                }
                fiber &h = g_fibers[(size_t)j];
                if (h.state == RUNNABLE) {
                    ready = false;
                } else if (h.state == EXITED) {
                    warp_report(w, nthreads, "a lane named in a warp collective's mask has exited");
                    return false;
                } else if (h.state == AT_BARRIER) {
                    warp_report(w, nthreads,
                                "divergence: part of the warp waits at a warp collective, part at __syncthreads");
                    return false;
                } else if (h.kind != f.kind) {
                    warp_report(w, nthreads, "divergence: lanes of one mask wait at different warp collectives");
                    return false;
                } else if (h.mask != mask) {
                    warp_report(w, nthreads, "lanes of one warp collective pass different masks");
                    return false;
                }
                lanes[m] = &h;
            }
            if (!ready) continue;
            done |= mask;
            if (f.kind == COLL_MMA_F16 || f.kind == COLL_MMA_BF16) {
                resolve_mma(lanes, f.kind);
            } else if (f.kind == COLL_LDMATRIX) {
                for (int m = 0; m < 32; m++)
                    if (lanes[m]->arg != f.arg) {
                        warp_report(w, nthreads, "ldmatrix: lanes disagree on .trans");
                        return false;
                    }
                if (!resolve_ldmatrix(lanes, w, nthreads)) return false;
            } else if (f.kind == COLL_BALLOT) {
                unsigned bits = 0;
                for (int m = 0; m < 32; m++)
                    if (lanes[m] && lanes[m]->payload) bits |= 1u << m;
                for (int m = 0; m < 32; m++)
                    if (lanes[m]) lanes[m]->result = bits;
            } else if (f.kind == COLL_SHFL) {
                for (int m = 0; m < 32; m++) {
                    if (!lanes[m]) continue;
                    const fiber &h = *lanes[m];
                    const int wd = h.width, seg = m & ~(wd - 1);
                    int src = m;
                    switch (h.mode) {
                    case SHFL_IDX: src = seg + (h.arg & (wd - 1)); break;
                    case SHFL_XOR:
                        src = m ^ h.arg;
                        if (src >= seg + wd || src < 0 || src > 31) src = m;
                        break;
                    case SHFL_DOWN:
                        src = m + h.arg;
                        if (src >= seg + wd) src = m;
                        break;
                    case SHFL_UP:
                        src = m - h.arg;
                        if (src < seg) src = m;
                        break;
                    }
                    if (!lanes[src]) {
                        warp_report(w, nthreads, "a shuffle reads a lane that is not in its mask");
                        return false;
                    }
                    lanes[m]->result = lanes[src]->payload;
                }
            }
            for (int m = 0; m < 32; m++)
                if (lanes[m]) lanes[m]->state = RUNNABLE;
            progress = true;
        }
    }
    return progress;
}

static bool resolve_warps(int nthreads) {
    bool progress = false;
    for (int w = 0; w < (nthreads + 31) / 32 && !g_failed; w++) progress |= resolve_warp(w, nthreads);
    return progress;
}

/* --- one block ------------------------------------------------------------ */

static bool run_block(int nthreads) {
    for (auto &s : g_shared) memset(s.first, 0xff, s.second);
    if (!g_dyn_smem.empty()) memset(g_dyn_smem.data(), 0xff, g_dyn_smem.size());
    for (int i = 0; i < nthreads; i++) {
        fiber &f = g_fibers[(size_t)i];
        f.linear = i;
        f.warp = i / 32;
        f.lane = i % 32;
        f.tid = uint3{(unsigned)i % blockDim.x, (unsigned)i / blockDim.x % blockDim.y,
                      (unsigned)i / (blockDim.x * blockDim.y)};
        f.state = RUNNABLE;
        f.file = "";
        f.line = 0;
        uint8_t *stack = g_stacks[(size_t)i];
        memset(stack + kStackBytes - kStackPoison, 0xff, kStackPoison);
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = stack;
        f.ctx.uc_stack.ss_size = kStackBytes;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_entry, 0);
    }
    /* Warps advance independently, as on the GPU: pick a warp at random,
     * run its runnable lanes (in shuffled order) until each blocks, complete
     * its collectives, and go on with the same warp with probability 3/4.
     * So one warp can get several collectives ahead of the others between
     * two barriers, which exposes races between warps (a missing barrier
     * before shared memory is rewritten), not only reads of unwritten data. */
    std::vector<int> order;
    order.reserve(32);
    for (;;) {
        resolve_warps(nthreads);
        if (g_failed) return false;
        int pick = -1, nrun = 0;
        for (int i = 0; i < nthreads; i++)
            if (g_fibers[(size_t)i].state == RUNNABLE && (!g_shuffle || rng_next() % (unsigned)++nrun == 0)) {
                pick = i; /* reservoir sampling: a uniformly random runnable fiber (thread order: the first) */
                if (!g_shuffle) break;
            }
        if (pick >= 0) {
            const int w = pick / 32;
            for (;;) {
                order.clear();
                for (int l = 0; l < 32 && w * 32 + l < nthreads; l++)
                    if (g_fibers[(size_t)(w * 32 + l)].state == RUNNABLE) order.push_back(w * 32 + l);
                if (order.empty()) break;
                if (g_shuffle)
                    for (size_t i = order.size(); i > 1; i--) std::swap(order[i - 1], order[rng_next() % i]);
                for (int i : order) {
                    g_cur = &g_fibers[(size_t)i];
                    emu_thread_idx = &g_cur->tid;
                    swapcontext(&g_sched_ctx, &g_cur->ctx);
                    if (g_failed) return false;
                }
                if (!resolve_warp(w, nthreads)) break;
                if (g_failed) return false;
                if (g_shuffle && rng_next() % 4 == 0) break;
            }
            continue;
        }
        int exited = 0, at_barrier = 0;
        for (int i = 0; i < nthreads; i++) {
            exited += g_fibers[(size_t)i].state == EXITED;
            at_barrier += g_fibers[(size_t)i].state == AT_BARRIER;
        }
        if (exited == nthreads) return true;
        if (at_barrier == nthreads) {
            for (int i = 0; i < nthreads; i++) g_fibers[(size_t)i].state = RUNNABLE;
            continue;
        }
        /* stuck: name what each warp is doing */
        for (int w = 0; w < (nthreads + 31) / 32; w++) {
            bool odd = false;
            for (int l = 0; l < 32 && w * 32 + l < nthreads; l++) odd |= g_fibers[(size_t)(w * 32 + l)].state != EXITED;
            if (odd) {
                warp_report(w, nthreads,
                            exited ? "deadlock: __syncthreads while other threads of the block have exited"
                                   : "deadlock: no thread can make progress");
                break;
            }
        }
        return false;
    }
}

static void ensure_stacks(int nthreads) {
    while ((int)g_stacks.size() < nthreads) {
        const size_t ps = page_size();
        void *m =
            mmap(nullptr, kStackBytes + ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            perror("emu: fiber stack");
            abort();
        }
        mprotect(m, ps, PROT_NONE); /* overflow guard below the stack */
        g_stacks.push_back((uint8_t *)m + ps);
    }
    if ((int)g_fibers.size() < nthreads) g_fibers.resize((size_t)nthreads);
}

cudaError_t launch_erased(const char *name, dim3 grid, dim3 block, size_t dyn_smem, void (*body)(void *), void *ctx) {
    if (!g_seed_read) {
        g_seed_read = true;
        const char *s = getenv("EMU_SEED");
        if (s && *s) g_seed = strtoull(s, nullptr, 0);
        const char *o = getenv("EMU_ORDER");
        if (o && strcmp(o, "linear") == 0) g_shuffle = false;
    }
    const unsigned long long nthreads = (unsigned long long)block.x * block.y * block.z;
    if (nthreads == 0 || nthreads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
        grid.z > 65535 || dyn_smem > 227 * 1024) {
        set_error(cudaErrorInvalidConfiguration,
                  "kernel %s: invalid launch grid (%u,%u,%u) block (%u,%u,%u) dynamic shared %zu bytes", name, grid.x,
                  grid.y, grid.z, block.x, block.y, block.z, dyn_smem);
        return cudaErrorInvalidConfiguration;
    }
    install_fault_handler();
    ensure_stacks((int)nthreads);
    g_dyn_smem.assign(dyn_smem, 0xff);
    g_rng = g_seed ^ (0x2545f4914f6cdd1dull * ++g_launches);
    g_body = body;
    g_body_ctx = ctx;
    g_kernel_name = name;
    g_failed = false;
    gridDim = grid;
    blockDim = block;
    g_in_kernel = true;
    bool ok = true;
    for (unsigned z = 0; z < grid.z && ok; z++)
        for (unsigned y = 0; y < grid.y && ok; y++)
            for (unsigned x = 0; x < grid.x && ok; x++) {
                blockIdx = uint3{x, y, z};
                g_blocks++;
                ok = run_block((int)nthreads);
            }
    g_in_kernel = false;
    g_cur = nullptr;
    emu_thread_idx = &g_idle_tid;
    if (!ok) return cudaErrorLaunchFailure;
    const std::string when = std::string("by kernel ") + name;
    if (check_all_allocs(when.c_str())) return cudaErrorIllegalAddress;
    return cudaSuccess;
}

} // namespace emu

/* ============================ runtime API ================================ */

extern "C" void emu_set_seed(uint64_t seed) {
    g_seed = seed;
    g_seed_read = true;
}
extern "C" void emu_set_shuffle(int on) { g_shuffle = on != 0; }
extern "C" const char *emu_last_error_message(void) { return g_message.c_str(); }
extern "C" void emu_stats(uint64_t *launches, uint64_t *blocks, uint64_t *switches) {
    if (launches) *launches = g_launches;
    if (blocks) *blocks = g_blocks;
    if (switches) *switches = g_switches;
}

extern "C" void emu_memory(uint64_t *live, uint64_t *peak, uint64_t *count) {
    if (live) *live = g_live_bytes;
    if (peak) *peak = g_peak_bytes;
    if (count) *count = g_allocs.size();
}
extern "C" void emu_memory_reset_peak(void) { g_peak_bytes = g_live_bytes; }
extern "C" void emu_set_device_memory(uint64_t bytes) { g_device_limit = bytes; }

static size_t host_memory_bytes();

/* The emulated device's size: emu_set_device_memory, else EMU_DEVICE_MEMORY,
 * else the host's RAM. */
static uint64_t device_memory_bytes() {
    if (g_device_limit) return g_device_limit;
    const char *e = getenv("EMU_DEVICE_MEMORY");
    if (e && *e) {
        const unsigned long long v = strtoull(e, nullptr, 10);
        if (v) return v;
    }
    return host_memory_bytes();
}

extern "C" cudaError_t cudaMalloc(void **p, size_t bytes) {
    if (!p) return cudaErrorInvalidValue;
    *p = nullptr;
    const uint64_t want = bytes ? bytes : 1, cap = device_memory_bytes();
    if (want > cap || g_live_bytes > cap - want) {
        set_error(cudaErrorMemoryAllocation, "cudaMalloc of %zu bytes: %llu of the device's %llu bytes are in use",
                  bytes, (unsigned long long)g_live_bytes, (unsigned long long)cap);
        return cudaErrorMemoryAllocation;
    }
    *p = emu_malloc(bytes ? bytes : 1);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
extern "C" cudaError_t cudaFree(void *p) {
    emu_free(p);
    return cudaSuccess;
}
extern "C" cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    (void)kind;
    if (bytes) memmove(dst, src, bytes);
    return cudaSuccess;
}
extern "C" cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
    (void)s;
    return cudaMemcpy(dst, src, bytes, kind);
}
extern "C" cudaError_t cudaMemset(void *p, int value, size_t bytes) {
    memset(p, value, bytes);
    return cudaSuccess;
}
extern "C" cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
extern "C" cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    (void)s;
    return cudaSuccess;
}
struct emu_event_st {
    double t; /* seconds, CLOCK_MONOTONIC */
};
extern "C" cudaError_t cudaEventCreate(cudaEvent_t *e) {
    if (!e) return cudaErrorInvalidValue;
    *e = new emu_event_st{0.0};
    return cudaSuccess;
}
extern "C" cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}
extern "C" cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    (void)s;
    if (!e) return cudaErrorInvalidValue;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    e->t = ts.tv_sec + ts.tv_nsec * 1e-9;
    return cudaSuccess;
}
extern "C" cudaError_t cudaEventSynchronize(cudaEvent_t e) { return e ? cudaSuccess : cudaErrorInvalidValue; }
extern "C" cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (!ms || !start || !end) return cudaErrorInvalidValue;
    *ms = (float)((end->t - start->t) * 1e3);
    return cudaSuccess;
}

extern "C" cudaError_t cudaGetLastError(void) {
    const cudaError_t e = g_last_error;
    g_last_error = cudaSuccess;
    return e;
}
extern "C" cudaError_t cudaPeekAtLastError(void) { return g_last_error; }
extern "C" const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    }
    return "unknown error";
}

/* --- streams and the one emulated device --------------------------------- */

struct emu_stream_st {
    int unused;
};
extern "C" cudaError_t cudaStreamCreate(cudaStream_t *s) {
    if (!s) return cudaErrorInvalidValue;
    *s = new emu_stream_st{0};
    return cudaSuccess;
}
extern "C" cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    (void)flags;
    return cudaStreamCreate(s);
}
extern "C" cudaError_t cudaStreamDestroy(cudaStream_t s) {
    delete s;
    return cudaSuccess;
}
extern "C" cudaError_t cudaGetDeviceCount(int *count) {
    if (!count) return cudaErrorInvalidValue;
    *count = 1;
    return cudaSuccess;
}
extern "C" cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
extern "C" cudaError_t cudaGetDevice(int *device) {
    if (!device) return cudaErrorInvalidValue;
    *device = 0;
    return cudaSuccess;
}
static size_t host_memory_bytes() {
    const long pages = sysconf(_SC_PHYS_PAGES), ps = sysconf(_SC_PAGESIZE);
    return pages > 0 && ps > 0 ? (size_t)pages * (size_t)ps : (size_t)1 << 32;
}
extern "C" cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device) {
    if (!prop) return cudaErrorInvalidValue;
    if (device != 0) return cudaErrorInvalidDevice;
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "SIMT emulator (kernels/emu)");
    prop->totalGlobalMem = (size_t)device_memory_bytes();
    prop->major = 8;
    prop->minor = 0;
    prop->multiProcessorCount = 1;
    return cudaSuccess;
}
extern "C" cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    const uint64_t cap = device_memory_bytes();
    if (free_bytes) *free_bytes = (size_t)(g_live_bytes < cap ? cap - g_live_bytes : 0);
    if (total_bytes) *total_bytes = (size_t)cap;
    return cudaSuccess;
}
