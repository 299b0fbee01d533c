/*
 * pg-internal.h: the process group. Private to lib/; names with a double
 * underscore are hidden from the shared library.
 */
#ifndef EVMPI_PG_INTERNAL_H
#define EVMPI_PG_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#include <pthread.h>
#include <stdatomic.h>

#include "bridge-internal.h"
#include "cuda-internal.h"
#include "cuda_stage-internal.h"
#include "options-internal.h"
#include "poller-internal.h"
#include "ref-internal.h"
#include "worker-internal.h"

struct evmpi_pg {
  evmpi_ref_t ref;           /* the user's handle + every work and future */
  MPI_Comm comm;
  MPI_Comm internal;         /* a second duplicate, for evmpi's own messages
                                (list alltoall), never seen by user tags */
  int rank, size;
  int tag_ub;                /* MPI_TAG_UB of comm */
  atomic_bool closing;       /* destroy started: submissions refused */
  atomic_int submitting;     /* sends and receives between their closing check and
                                their hand-over to the poller (see pg_close_gate) */
  atomic_int phase;          /* EVMPI_PG_LIVE .. EVMPI_PG_STOPPED (groups.c) */
  pthread_t teardown_thread; /* who runs the teardown, once phase is RUNNING */
  atomic_uint_fast64_t next_seq;
  atomic_int inflight;       /* submitted works not yet completed */
  evmpi_cuda_path_t cuda_path; /* how device tensors move, fixed at creation */
  size_t piece_bytes;        /* allreduce/reduce/broadcast go to MPI in pieces of this */
  size_t cuda_chunk;         /* bytes per staged pipeline chunk, a multiple of it */
  evmpi_settings_t settings; /* what it was created with (options.c) */
#ifdef EVMPI_HAVE_CUDA
  evmpi_stager_t *stager;    /* the worker's pinned buffers and streams, lazily */
#endif
  /* groups.c's registry, under its lock */
  evmpi_pg_t *reg_prev, *reg_next;
  bool registered;
  evmpi_bridge_t bridge;
  evmpi_worker_t worker;
  evmpi_poller_t poller;
};

static inline void evmpi__pg_retain(evmpi_pg_t *pg) { evmpi__ref_get(&pg->ref); }
static inline void evmpi__pg_release(evmpi_pg_t *pg) { evmpi__ref_put(&pg->ref); }
/* The real teardown, once destroy has claimed it: engines stopped (within
 * the group timeout when one is set), leftover callbacks delivered,
 * communicators freed, the group unregistered and the user's reference
 * dropped. The bridge calls it after a batch when a callback asked for
 * destroy. */
void evmpi__pg_teardown(evmpi_pg_t *pg);
/* MPI is being finalised with pg alive (claimed by the caller): its
 * engines stop without running any more callbacks (groups.c). */
void evmpi__pg_stop_at_finalize(evmpi_pg_t *pg, int64_t deadline_ns);
/* MPI initialised (evmpi__mpi_ensure_init) with the groups' finalize hooks. */
int evmpi__pg_mpi_init(void);
/* Common submission checks: pg and out not NULL, group not closing. */
int evmpi__pg_check(const char *op, evmpi_pg_t *pg, evmpi_work_t **out);
int evmpi__pg_check_rank(const char *op, const char *arg, const evmpi_pg_t *pg, int rank);
/* A send or receive enters (false: the group is closing, the last error is
 * set) and leaves the section in which it calls MPI on the group's
 * communicator; destroy waits for those inside before it frees it. */
bool evmpi__pg_enter_submit(const char *op, evmpi_pg_t *pg);
void evmpi__pg_leave_submit(evmpi_pg_t *pg);

#endif /* EVMPI_PG_INTERNAL_H */
