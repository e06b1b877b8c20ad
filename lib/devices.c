/*
 * devices.c - the CPU's description and the CUDA module probe (devices.h).
 */
#include "devices.h"

#include "common.h"
#include "cuda/cuda_module.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The name of the entry point a CUDA backend module exports (cuda_module.h). */
#define DF_CUDA_ENTRY DF_CUDA_ENTRY_NAME

static void cpu_name(char *out, size_t n) {
    snprintf(out, n, "CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *c = strchr(line, ':');
        if (!c) break;
        c++;
        while (*c == ' ' || *c == '\t') c++;
        snprintf(out, n, "%s", c);
        out[strcspn(out, "\n")] = '\0';
        break;
    }
    fclose(f);
}

void df_cpu_device_info(int n_threads, diffuse_device_info *info) {
    memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
    info->device = DIFFUSE_DEVICE_CPU;
    info->index = 0;
    info->available = 1;
    cpu_name(info->name, sizeof info->name);
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) info->memory_bytes = (uint64_t)pages * (uint64_t)page;
    int threads = n_threads;
#ifdef _OPENMP
    if (threads <= 0) threads = omp_get_max_threads();
#endif
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    info->threads = threads > 0 ? (uint32_t)threads : 1;
    snprintf(info->note, sizeof info->note, "reference backend (float32)");
}

/* Tries @path; 1 when something was found there (loaded or not). A module
 * whose entry point answers with a table this library can use is kept loaded
 * and returned in *@mod; otherwise @note says what is wrong with it. */
static int try_module(const char *path, const df_cuda_module **mod, char *note, size_t n) {
    if (access(path, F_OK) != 0) return 0;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(note, n, "CUDA module %s cannot be loaded: %s", path, e ? e : "unknown error");
        return 1;
    }
    df_cuda_entry_fn entry;
    void *sym = dlsym(h, DF_CUDA_ENTRY);
    memcpy(&entry, &sym, sizeof entry);
    if (!sym) {
        snprintf(note, n,
                 "CUDA module %s has no backend entry point (%s): this version ships CUDA kernels but no CUDA "
                 "backend yet",
                 path, DF_CUDA_ENTRY);
        dlclose(h);
        return 1;
    }
    const df_cuda_module *m = entry();
    if (!m || m->abi != DF_CUDA_MODULE_ABI || m->backend_size != sizeof(bk_backend) ||
        m->ops_size != sizeof(bk_ops) || m->error_size != sizeof(df_error) || !m->count_devices || !m->create ||
        !m->device_info) {
        snprintf(note, n, "CUDA module %s was built for another libdiffuse (backend ABI %u, this library uses %u)",
                 path, m ? m->abi : 0u, DF_CUDA_MODULE_ABI);
        dlclose(h);
        return 1;
    }
    /* Kept loaded for good: backends it created may outlive any caller. A
     * later dlopen of the same path returns the same handle. */
    *mod = m;
    return 1;
}

/* Finds the module; NULL with @note saying why when there is none usable. */
static const df_cuda_module *find_module(char *note, size_t n) {
    const df_cuda_module *mod = NULL;
    const char *env = getenv("DIFFUSE_CUDA_MODULE");
    if (env && *env) {
        if (!try_module(env, &mod, note, n))
            snprintf(note, n, "CUDA module %s (DIFFUSE_CUDA_MODULE) not found", env);
        return mod;
    }
    Dl_info di;
    char dir[4096] = "";
    if (dladdr((void *)df_cuda_probe, &di) && di.dli_fname) {
        snprintf(dir, sizeof dir, "%s", di.dli_fname);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = '\0';
        else
            snprintf(dir, sizeof dir, ".");
    }
    static const char *const sub[] = {"diffuse", "kernels"};
    for (size_t i = 0; i < sizeof sub / sizeof *sub; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s/libdiffuse_cuda.so", dir, sub[i]);
        if (try_module(path, &mod, note, n)) return mod;
    }
    snprintf(note, n, "no CUDA module (libdiffuse_cuda.so) beside %s: built without CUDA",
             dir[0] ? dir : "libdiffuse");
    return NULL;
}

int df_cuda_probe(char *note, size_t n) {
    if (n) note[0] = '\0';
    const df_cuda_module *m = find_module(note, n);
    if (!m) return 0;
    char why[200] = "";
    const int count = m->count_devices(why, sizeof why);
    if (count <= 0) {
        snprintf(note, n, "%s module: %s", m->name, why[0] ? why : "no CUDA device");
        return 0;
    }
    snprintf(note, n, "%s module: %d device%s", m->name, count, count == 1 ? "" : "s");
    return count;
}

diffuse_status df_cuda_device_info(int index, diffuse_device_info *info) {
    char note[256];
    memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
    info->device = DIFFUSE_DEVICE_CUDA;
    info->index = index;
    snprintf(info->name, sizeof info->name, "CUDA");
    const df_cuda_module *m = find_module(note, sizeof note);
    if (!m) {
        snprintf(info->note, sizeof info->note, "%s", note);
        return DIFFUSE_ERR_NO_DEVICE;
    }
    const diffuse_status st = m->device_info(index, info);
    info->struct_size = sizeof *info;
    info->device = DIFFUSE_DEVICE_CUDA;
    info->index = index;
    info->available = st == DIFFUSE_OK;
    return st;
}

diffuse_status df_cuda_create(int index, diffuse_precision precision, bk_backend **out, df_error *err) {
    char note[256];
    *out = NULL;
    const df_cuda_module *m = find_module(note, sizeof note);
    if (!m) return df_fail(err, DIFFUSE_ERR_NO_DEVICE, "%s", note);
    return m->create(index, precision, out, err);
}
