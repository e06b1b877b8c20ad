/*
 * job.h - what lib/job.c (asynchronous jobs) needs from lib/api.c: the
 * context's busy flag, and the three calls split into the check (on the
 * starting thread) and the run (on the job's worker thread).
 *
 * Locking (see job.c for the job side): each context has a mutex guarding
 * `busy` and `job`. A blocking call or a job start sets busy under it (or
 * returns DIFFUSE_ERR_BUSY); the call's end, or the job worker's end
 * (df_ctx_end), clears both and signals the context's condition variable,
 * which diffuse_ctx_free waits on after cancelling the context's job. After
 * df_ctx_end returns, the worker never touches the context again.
 */
#ifndef DIFFUSE_JOB_H
#define DIFFUSE_JOB_H

#include "diffuse.h"

#include <stdatomic.h>

typedef enum df_call_kind { DF_CALL_GENERATE = 0, DF_CALL_EDIT = 1, DF_CALL_VARIATION = 2 } df_call_kind;

/* What a job adds to a run: see df_run in pipe/pipe.h. */
typedef struct df_run_hooks {
    void (*observe)(void *user, const diffuse_progress *p);
    void *observe_user;
    const atomic_int *cancel;
} df_run_hooks;

/* Marks @ctx busy for @job (NULL for a blocking call); DIFFUSE_ERR_BUSY if
 * it already is. */
diffuse_status df_ctx_begin(diffuse_ctx *ctx, diffuse_job *job);

/* Clears the busy mark and wakes diffuse_ctx_free. */
void df_ctx_end(diffuse_ctx *ctx);

/* Checks the host's @params as the blocking call does (message in the
 * context) and writes the library-size copy to @p (a diffuse_X_params of
 * @kind). Pointers inside still point to host memory. The context must be
 * marked busy by the caller. */
diffuse_status df_call_check(diffuse_ctx *ctx, df_call_kind kind, const void *params, void *p);

/* Runs a checked call; the context must be marked busy by the caller. */
diffuse_status df_call_run(diffuse_ctx *ctx, df_call_kind kind, const void *p, diffuse_images **out,
                           const df_run_hooks *hooks);

/* The context's last error message. */
const char *df_ctx_message(const diffuse_ctx *ctx);

/* job.c: asks @job to stop (diffuse_ctx_free on a busy context). */
void df_job_request_cancel(diffuse_job *job);

#endif /* DIFFUSE_JOB_H */
