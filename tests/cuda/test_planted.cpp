/*
 * test_planted.cpp - shows that the SIMT emulator catches two planted bugs in
 * a copy of the group-norm kernel (planted_group_norm.cu):
 *   - the missing __syncthreads() gives a wrong result (threads read partial
 *     sums the other warps have not written yet: poisoned shared memory, NaN),
 *     for every seed tried, while the unmodified copy passes on the same seeds;
 *   - so does the missing barrier at the end of the reduction (a warp running
 *     ahead overwrites a partial sum that slower warps still have to read);
 *   - the out-of-range write is reported: by the canary check after the launch
 *     (launch fails with cudaErrorIllegalAddress, message names the
 *     allocation) when it lands in the tail padding, and by the guard page
 *     (the process stops with a report and exit code 86) when the buffer ends
 *     on a 256-byte boundary; the latter runs in a forked child.
 */
#include "kt_common.h"

#include <string>

#include <sys/wait.h>
#include <unistd.h>

namespace planted_clean {
int launch(const dk_group_norm_params *p);
}
namespace planted_missing_sync {
int launch(const dk_group_norm_params *p);
}
namespace planted_missing_sync_war {
int launch(const dk_group_norm_params *p);
}
namespace planted_oob {
int launch(const dk_group_norm_params *p);
}

struct gn_problem {
    int n, c, hw, groups;
    std::vector<float> x, gamma, beta;
    std::vector<double> ref;
};

static gn_problem make_problem(int n, int c, int hw, int groups, kt_rng &rng) {
    gn_problem pr{n, c, hw, groups, rng.normals((size_t)n * c * hw), rng.normals((size_t)c), rng.normals((size_t)c),
                  {}};
    pr.ref.resize(pr.x.size());
    const int cpg = c / groups;
    for (int s = 0; s < n; s++)
        for (int g = 0; g < groups; g++) {
            const size_t base = ((size_t)s * c + (size_t)g * cpg) * hw, count = (size_t)cpg * hw;
            double mean = 0, var = 0;
            for (size_t i = 0; i < count; i++) mean += pr.x[base + i];
            mean /= (double)count;
            for (size_t i = 0; i < count; i++) var += (pr.x[base + i] - mean) * (pr.x[base + i] - mean);
            var /= (double)count;
            for (size_t i = 0; i < count; i++) {
                const int ch = g * cpg + (int)(i / hw);
                pr.ref[base + i] = (pr.x[base + i] - mean) / sqrt(var + 1e-5) * pr.gamma[ch] + pr.beta[ch];
            }
        }
    return pr;
}

static std::string g_report; /* the emulator's message right after the launch */

/* Runs @launch on @pr; returns the launch status and sets *rel. */
static int run(int (*launch)(const dk_group_norm_params *), const gn_problem &pr, double *rel) {
    void *dx = kt_to_device(pr.x, DK_F32), *dy = kt_alloc(pr.x.size(), DK_F32);
    float *dg = (float *)kt_to_device(pr.gamma, DK_F32), *db = (float *)kt_to_device(pr.beta, DK_F32);
    const dk_group_norm_params p = {dx, dg, db, dy, pr.n, pr.c, pr.hw, pr.groups, 1e-5f, 0, DK_F32};
    const int rc = launch(&p);
    g_report = emu_last_error_message();
    *rel = kt_rel_err(kt_download(dy, pr.x.size(), DK_F32), pr.ref);
    cudaFree(dx);
    cudaFree(dy);
    cudaFree(dg);
    cudaFree(db);
    return rc;
}

int main(void) {
    const double t0 = kt_now();
    kt_rng rng(19);
    double rel;

    // (a) the missing barrier, over several seeds and with the fibers in plain thread order
    const gn_problem pr = make_problem(2, 64, 37, 32, rng);
    for (uint64_t seed = 1; seed <= 4; seed++) {
        emu_set_seed(seed);
        int rc = run(planted_clean::launch, pr, &rel);
        kt_expect(rc == cudaSuccess && rel <= 1e-5, "seed %llu: the unmodified copy fails (rc %d, rel err %g)",
                  (unsigned long long)seed, rc, rel);
        rc = run(planted_missing_sync::launch, pr, &rel);
        kt_expect(rel > 1e-5, "seed %llu: missing __syncthreads() not caught (rc %d, rel err %g)",
                  (unsigned long long)seed, rc, rel);
        printf("seed %llu: missing __syncthreads -> rel err %g (caught: %s)\n", (unsigned long long)seed, rel,
               rel > 1e-5 ? "yes" : "NO");
        rc = run(planted_missing_sync_war::launch, pr, &rel);
        kt_expect(rel > 1e-5, "seed %llu: missing second __syncthreads() not caught (rc %d, rel err %g)",
                  (unsigned long long)seed, rc, rel);
        printf("seed %llu: missing __syncthreads after the reduction -> rel err %g (caught: %s)\n",
               (unsigned long long)seed, rel, rel > 1e-5 ? "yes" : "NO");
    }
    emu_set_shuffle(0);
    run(planted_missing_sync::launch, pr, &rel);
    kt_expect(rel > 1e-5, "thread order: missing __syncthreads() not caught (rel err %g)", rel);
    printf("thread order: missing __syncthreads -> rel err %g\n", rel);
    run(planted_missing_sync_war::launch, pr, &rel);
    kt_expect(rel > 1e-5, "thread order: missing second __syncthreads() not caught (rel err %g)", rel);
    printf("thread order: missing __syncthreads after the reduction -> rel err %g\n", rel);
    emu_set_shuffle(1);
    emu_set_seed(1);

    // (b) the out-of-range write into the tail padding: 2*40*13 floats = 4160 bytes
    const gn_problem small = make_problem(2, 40, 13, 8, rng);
    int rc = run(planted_clean::launch, small, &rel);
    kt_expect(rc == cudaSuccess && rel <= 1e-5, "clean copy on the OOB shape fails (rc %d, rel %g)", rc, rel);
    rc = run(planted_oob::launch, small, &rel);
    const char *msg = g_report.c_str();
    kt_expect(rc == cudaErrorIllegalAddress, "out-of-range write not reported (rc %d)", rc);
    kt_expect(strstr(msg, "past the end of allocation") != nullptr, "report does not say where: '%s'", msg);
    printf("out-of-range write (canary): rc %d, '%s'\n", rc, msg);
    cudaGetLastError();

    // (c) the same bug where the output ends on a page-aligned guard: 1*64*16 floats = 4096 bytes
    const gn_problem aligned = make_problem(1, 64, 16, 8, rng);
    int pipefd[2];
    if (pipe(pipefd) != 0) return 2;
    fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        run(planted_oob::launch, aligned, &rel);
        _exit(0); // not reached when the guard page works
    }
    close(pipefd[1]);
    char report[2048] = {0};
    size_t got = 0;
    ssize_t r;
    while (got < sizeof report - 1 && (r = read(pipefd[0], report + got, sizeof report - 1 - got)) > 0)
        got += (size_t)r;
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    kt_expect(WIFEXITED(status) && WEXITSTATUS(status) == 86, "guard page: child status %d, not exit 86", status);
    kt_expect(strstr(report, "0 bytes past the end of allocation") != nullptr, "guard page report: '%s'", report);
    printf("out-of-range write (guard page): child exit %d, report: %s", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
           report);
    return kt_finish("test_planted", t0);
}
