/* pg.c: process groups: creation over the world, a subset of it or a
 * communicator of the application's; rank, size; destroy and abort. */
#include "pg-internal.h"
#include "bridge-internal.h"
#include "clock-internal.h"
#include "cuda-internal.h"
#include "cuda_stage-internal.h"
#include "debug-internal.h"
#include "groups-internal.h"
#include "loop_event-internal.h"
#include "mpi_env-internal.h"
#include "options-internal.h"
#include "pieces-internal.h"
#include "poller-internal.h"
#include "status-internal.h"
#include "timeline-internal.h"
#include "worker-internal.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

/* The group's last reference is gone. */
static void pg_last(evmpi_ref_t *ref) {
  evmpi_pg_t *pg = evmpi__container_of(ref, evmpi_pg_t, ref);
  evmpi__bridge_fini(&pg->bridge);
  evmpi__worker_fini(&pg->worker);
  evmpi__poller_fini(&pg->poller);
#ifdef EVMPI_HAVE_CUDA
  /* Last reference: a worker stuck in MPI (broken group) holds one, so its
   * staging buffers are never freed under it. */
  evmpi__stager_free(pg->stager);
#endif
  free(pg);
}

evmpi_cuda_path_t evmpi_pg_cuda_path(const evmpi_pg_t *pg) {
  return pg ? pg->cuda_path : EVMPI_CUDA_NONE;
}

static int mpi_fail(const char *op, const char *call, int rc) {
  char text[MPI_MAX_ERROR_STRING + 32];
  evmpi__mpi_error_text(rc, text, sizeof text);
  return evmpi__fail(EVMPI_ERR_MPI, "%s: %s failed: %s", op, call, text);
}

/* What the settings reach beyond the group: the process's debug flag
 * (before the worker starts, which reads it), its timeline file and its
 * exit wait. */
static void apply_process_settings(const evmpi_settings_t *s) {
  if (s->debug)
    evmpi__debug_enable();
  if (s->timeline[0])
    evmpi__timeline_open(s->timeline);
  if (s->explicit_mask & (1u << EVMPI_SETTING_EXIT_WAIT))
    evmpi__mpi_set_exit_wait_ms((int)s->exit_wait_ms);
}

/* Takes ownership of comm (a communicator of evmpi's own). */
static int pg_open(const char *op, struct event_base *base, MPI_Comm comm,
                   const evmpi_pg_options_t *opts, evmpi_pg_t **out) {
  MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  evmpi_pg_t *pg = calloc(1, sizeof *pg);
  int src = pg ? evmpi__settings_resolve(op, opts, &pg->settings)
               : evmpi__fail(EVMPI_ERR_NOMEM, "%s: out of memory", op);
  if (src != EVMPI_OK) {
    free(pg);
    MPI_Comm_free(&comm);
    return src;
  }
  apply_process_settings(&pg->settings);
  evmpi__ref_init(&pg->ref, 1, pg_last);
  atomic_init(&pg->closing, false);
  atomic_init(&pg->next_seq, 0);
  atomic_init(&pg->inflight, 0);
  atomic_init(&pg->phase, EVMPI_PG_LIVE);
  pg->comm = comm;
  pg->internal = MPI_COMM_NULL;
  int dup_rc = MPI_Comm_dup(comm, &pg->internal);
  MPI_Comm_rank(comm, &pg->rank);
  MPI_Comm_size(comm, &pg->size);
  int *tag_ub = NULL, flag = 0;
  MPI_Comm_get_attr(comm, MPI_TAG_UB, &tag_ub, &flag);
  pg->tag_ub = flag && tag_ub ? *tag_ub : 32767; /* 32767: the least MPI promises */
  int rc = dup_rc == MPI_SUCCESS ? EVMPI_OK : mpi_fail(op, "MPI_Comm_dup", dup_rc);
  if (rc == EVMPI_OK)
    rc = evmpi__pieces_configure(op, pg);
  if (rc == EVMPI_OK)
    rc = evmpi__cuda_configure(op, pg);
  if (rc == EVMPI_OK) {
    MPI_Comm_set_errhandler(pg->internal, MPI_ERRORS_RETURN);
    const evmpi_loop_ops_t *loop = base ? &evmpi__loop_event_ops
                                   : evmpi__options_loop(opts) == EVMPI_LOOP_EXTERNAL
                                       ? NULL
                                       : &evmpi__loop_thread_ops;
    rc = evmpi__bridge_open(&pg->bridge, pg, loop, base, evmpi__pg_teardown);
  }
  if (rc == EVMPI_OK)
    rc = evmpi__worker_start(&pg->worker, pg);
  if (rc == EVMPI_OK && pg->settings.timeout_ms > 0)
    rc = evmpi__worker_set_timeout(&pg->worker, pg, (int)pg->settings.timeout_ms);
  if (rc == EVMPI_OK)
    rc = evmpi__poller_start(&pg->poller, pg);
  evmpi__groups_add(pg); /* a failed open is torn down as a group too */
  if (rc != EVMPI_OK) {
    if (evmpi__groups_claim(pg)) /* else MPI_Finalize stopped it meanwhile */
      evmpi__pg_teardown(pg);
    return rc;
  }
  *out = pg;
  return EVMPI_OK;
}

static int check_ranks(const int *ranks, int nranks, int world) {
  if (nranks < 1 || nranks > world)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_create: nranks %d is outside 1..%d (the world size)",
                       nranks, world);
  for (int i = 0; i < nranks; i++) {
    if (ranks[i] < 0 || ranks[i] >= world)
      return evmpi__fail(EVMPI_ERR_INVALID, "pg_create: ranks[%d] = %d is outside 0..%d", i,
                         ranks[i], world - 1);
    for (int j = 0; j < i; j++)
      if (ranks[j] == ranks[i])
        return evmpi__fail(EVMPI_ERR_INVALID, "pg_create: rank %d appears twice (ranks[%d] and "
                           "ranks[%d])", ranks[i], j, i);
  }
  return EVMPI_OK;
}

/* A base and no loop at once cannot both be meant. */
static int check_loop(const char *op, struct event_base *base, const evmpi_pg_options_t *opts) {
  if (base && evmpi__options_loop(opts) == EVMPI_LOOP_EXTERNAL)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: base is given but the options say "
                       "EVMPI_LOOP_EXTERNAL (pass a NULL base)", op);
  return EVMPI_OK;
}

/* What MPI_Finalize does first, on the groups (mpi_env.c calls it). */
static bool stop_all_groups(int wait_ms) {
  return evmpi__groups_stop_all(wait_ms, evmpi__pg_stop_at_finalize);
}

static const evmpi_finalize_hooks_t finalize_hooks = {
    .stop_groups = stop_all_groups,
    .wait_detached = evmpi__worker_wait_detached,
    .any_broken = evmpi__groups_any_broken,
};

int evmpi__pg_mpi_init(void) { return evmpi__mpi_ensure_init(&finalize_hooks); }

/* What every create function checks first: pg, the loop, MPI. */
static int create_begin(const char *op, struct event_base *base, const evmpi_pg_options_t *opts,
                        evmpi_pg_t **pg) {
  if (!pg)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: pg is NULL", op);
  *pg = NULL;
  int rc = check_loop(op, base, opts);
  if (rc == EVMPI_OK)
    rc = evmpi__pg_mpi_init();
  return rc;
}

int evmpi_pg_create(struct event_base *base, const int *ranks, int nranks, evmpi_pg_t **pg) {
  return evmpi_pg_create_with(base, ranks, nranks, NULL, pg);
}

int evmpi_pg_create_with(struct event_base *base, const int *ranks, int nranks,
                         const evmpi_pg_options_t *opts, evmpi_pg_t **pg) {
  int rc = create_begin("pg_create", base, opts, pg);
  if (rc != EVMPI_OK)
    return rc;
  MPI_Comm comm = MPI_COMM_NULL;
  if (!ranks) {
    rc = MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    if (rc != MPI_SUCCESS)
      return mpi_fail("pg_create", "MPI_Comm_dup", rc);
    return pg_open("pg_create", base, comm, opts, pg);
  }
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if ((rc = check_ranks(ranks, nranks, world)) != EVMPI_OK)
    return rc;
  MPI_Group world_group, group;
  MPI_Comm_group(MPI_COMM_WORLD, &world_group);
  rc = MPI_Group_incl(world_group, nranks, ranks, &group);
  MPI_Group_free(&world_group);
  if (rc != MPI_SUCCESS)
    return mpi_fail("pg_create", "MPI_Group_incl", rc);
  rc = MPI_Comm_create(MPI_COMM_WORLD, group, &comm);
  MPI_Group_free(&group);
  if (rc != MPI_SUCCESS)
    return mpi_fail("pg_create", "MPI_Comm_create", rc);
  if (comm == MPI_COMM_NULL)
    return EVMPI_OK; /* not a member: no group, as in PyTorch's ProcessGroupMPI */
  return pg_open("pg_create", base, comm, opts, pg);
}

int evmpi_pg_create_from_comm(struct event_base *base, MPI_Comm comm, evmpi_pg_t **pg) {
  return evmpi_pg_create_from_comm_with(base, comm, NULL, pg);
}

int evmpi_pg_create_from_comm_with(struct event_base *base, MPI_Comm comm,
                                   const evmpi_pg_options_t *opts, evmpi_pg_t **pg) {
  int rc = create_begin("pg_create_from_comm", base, opts, pg);
  if (rc != EVMPI_OK)
    return rc;
  if (comm == MPI_COMM_NULL)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_create_from_comm: comm is MPI_COMM_NULL");
  MPI_Comm dup = MPI_COMM_NULL;
  rc = MPI_Comm_dup(comm, &dup);
  if (rc != MPI_SUCCESS)
    return mpi_fail("pg_create_from_comm", "MPI_Comm_dup", rc);
  return pg_open("pg_create_from_comm", base, dup, opts, pg);
}

int evmpi_pg_get_setting(const evmpi_pg_t *pg, const char *name, char *buf, size_t len) {
  if (!pg || !buf || len == 0)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_get_setting: %s is NULL or empty",
                       !pg ? "pg" : "buf");
  int i = evmpi__settings_index("pg_get_setting", name);
  if (i < 0)
    return EVMPI_ERR_INVALID;
  /* The two that change after creation are read where they live now. */
  evmpi_settings_t now = pg->settings;
  now.timeout_ms = evmpi__worker_timeout((evmpi_worker_t *)&pg->worker);
  now.exit_wait_ms = evmpi__mpi_exit_wait_ms();
  evmpi__settings_format(&now, i, buf, len);
  return EVMPI_OK;
}

int evmpi_pg_rank(const evmpi_pg_t *pg) { return pg ? pg->rank : -1; }
int evmpi_pg_size(const evmpi_pg_t *pg) { return pg ? pg->size : -1; }
const char *evmpi_pg_backend_name(const evmpi_pg_t *pg) {
  (void)pg;
  return "mpi";
}

/* Refuses new sends and receives and waits for those already past their
 * check to hand their request over (a few MPI calls that never block). */
static void close_gate(evmpi_pg_t *pg) {
  atomic_store(&pg->closing, true);
  while (atomic_load(&pg->submitting) != 0)
    sched_yield();
}

bool evmpi__pg_enter_submit(const char *op, evmpi_pg_t *pg) {
  atomic_fetch_add(&pg->submitting, 1);
  if (!atomic_load(&pg->closing))
    return true;
  atomic_fetch_sub(&pg->submitting, 1);
  evmpi__fail(EVMPI_ERR_ABORTED, "%s: the group is being destroyed", op);
  return false;
}

void evmpi__pg_leave_submit(evmpi_pg_t *pg) { atomic_fetch_sub(&pg->submitting, 1); }

static void free_comms(evmpi_pg_t *pg) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized)
    return;
  if (pg->comm != MPI_COMM_NULL)
    MPI_Comm_free(&pg->comm);
  if (pg->internal != MPI_COMM_NULL)
    MPI_Comm_free(&pg->internal);
}

void evmpi__pg_teardown(evmpi_pg_t *pg) {
  if (!evmpi__groups_begin_teardown(pg))
    return; /* MPI_Finalize stopped it first: nothing of it is left to run */
  close_gate(pg);
  /* Bounded by the group's timeout, when it has one: what is still running
   * or pending when it runs out is failed and left to MPI. */
  int timeout_ms = evmpi__worker_timeout(&pg->worker);
  int64_t deadline = timeout_ms > 0 ? evmpi__now_ns() + (int64_t)timeout_ms * 1000000 : 0;
  /* A broken group's worker is stuck in a collective that MPI cannot
   * cancel: it is left behind, and so are the communicators it uses. */
  bool clean = evmpi__worker_stop(&pg->worker, deadline);
  evmpi__poller_stop(&pg->poller, clean ? NULL : "abandoned: the group was destroyed while broken",
                     deadline);
  bool on_own_loop = evmpi__bridge_on_loop_thread(&pg->bridge);
  evmpi__bridge_close(&pg->bridge);
  if (clean)
    free_comms(pg);
  evmpi__timeline_flush();
  /* On its own loop thread, the group leaves the registry when that thread
   * has finished with the loop (bridge.c); elsewhere, now. */
  if (!on_own_loop)
    evmpi__groups_remove(pg);
  evmpi__pg_release(pg); /* the user's reference */
}

void evmpi__pg_stop_at_finalize(evmpi_pg_t *pg, int64_t deadline_ns) {
  close_gate(pg);
  /* No callback runs from here: the application is on its way out (its
   * main may have returned, and the callbacks' arguments with it). */
  evmpi__bridge_halt(&pg->bridge, deadline_ns);
  evmpi__worker_fail_queued(&pg->worker, "MPI is being finalized");
  bool clean = evmpi__worker_stop(&pg->worker, deadline_ns);
  evmpi__poller_stop(&pg->poller, "abandoned: MPI is being finalized", 0);
  if (clean)
    free_comms(pg);
  evmpi__timeline_flush();
}

int evmpi_pg_set_timeout(evmpi_pg_t *pg, int timeout_ms) {
  if (!pg)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_set_timeout: pg is NULL");
  if (timeout_ms < 0)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_set_timeout: timeout_ms %d is negative (0 = no "
                       "limit)", timeout_ms);
  return evmpi__worker_set_timeout(&pg->worker, pg, timeout_ms);
}

void evmpi_pg_destroy(evmpi_pg_t *pg) {
  if (!pg)
    return;
  /* Once: a second call while the first runs (a callback that destroy
   * itself delivers), or one after MPI_Finalize stopped the group, only
   * finds the teardown taken. */
  if (!evmpi__groups_claim(pg))
    return;
  evmpi_bridge_t *b = &pg->bridge;
  if (b->own_loop ? evmpi__bridge_on_loop_thread(b) : b->dispatching) {
    /* Called from one of this group's callbacks: finish the batch first. */
    atomic_store(&pg->closing, true);
    b->destroy_requested = true;
    return;
  }
  evmpi__pg_teardown(pg);
}

void evmpi_pg_abort(evmpi_pg_t *pg) {
  if (!pg)
    return;
  atomic_store(&pg->closing, true);
  evmpi__worker_fail_queued(&pg->worker, "the group was aborted (evmpi_pg_abort)");
  evmpi__poller_fail_pending(&pg->poller, EVMPI_ERR_ABORTED,
                             "the group was aborted (evmpi_pg_abort)");
  MPI_Abort(pg->comm, EXIT_FAILURE);
}

int evmpi__pg_check(const char *op, evmpi_pg_t *pg, evmpi_work_t **out) {
  if (!out)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: work is NULL", op);
  *out = NULL;
  if (!pg)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: pg is NULL", op);
  if (atomic_load(&pg->closing))
    return evmpi__fail(EVMPI_ERR_ABORTED, "%s: the group is being destroyed", op);
  char why[256];
  if (evmpi__worker_broken(&pg->worker, why, sizeof why) ||
      evmpi__poller_broken(&pg->poller, why, sizeof why)) /* a missed p2p deadline */
    return evmpi__fail(EVMPI_ERR_ABORTED, "%s: the group is broken: %s", op, why);
  return EVMPI_OK;
}

int evmpi__pg_check_rank(const char *op, const char *arg, const evmpi_pg_t *pg, int rank) {
  if (rank < 0 || rank >= pg->size)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s %d is outside 0..%d (the group size is %d)", op,
                       arg, rank, pg->size - 1, pg->size);
  return EVMPI_OK;
}
