/* mpi_env.c: MPI is initialised once, at the threading level evmpi needs,
 * and finalised at exit only when evmpi initialised it. Whoever finalises
 * it, every live group is stopped first: evmpi hangs a callback on
 * MPI_COMM_SELF, whose attributes MPI_Finalize deletes before anything
 * else (MPI-2.2 and later), while MPI still works. */
#include "mpi_env-internal.h"
#include "clock-internal.h"
#include "mpi_ext-internal.h"
#include "status-internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The worker runs blocking collectives while the poller tests requests and
 * any thread may issue sends and receives: MPI is called from several
 * threads at once, so nothing below MPI_THREAD_MULTIPLE will do. */
#define EVMPI_THREAD_LEVEL MPI_THREAD_MULTIPLE

static pthread_mutex_t env_lock = PTHREAD_MUTEX_INITIALIZER;
static bool env_ready;

static const char *level_name(int level) {
  switch (level) {
  case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
  case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
  case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
  case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
  default: return "an unknown level";
  }
}

/* How long finalize waits, in all, for live groups to stop, teardowns
 * under way to end and broken groups' workers to come back out of MPI
 * (their peers arrived late) before it gives up on them:
 * EVMPI_EXIT_WAIT_MS (options.c's table), set by each group created with
 * it set. */
#define EXIT_WAIT_MS_DEFAULT 5000
static atomic_int exit_wait_ms = EXIT_WAIT_MS_DEFAULT; /* options.c sets it */
static bool workers_stuck; /* a detached worker never came out: skip MPI_Finalize */
/* The group layer's part of finalize (pg.c gives it with the first
 * evmpi__mpi_ensure_init; set under env_lock before MPI can be finalized
 * by evmpi, read at finalize). */
static const evmpi_finalize_hooks_t *hooks;

/* Once, whether from evmpi's exit handler or from the MPI_Finalize it (or
 * the application) calls: the wait is not spent twice. */
static void stop_groups(void) {
  static atomic_bool done;
  if (atomic_exchange(&done, true))
    return;
  int64_t start = evmpi__now_ns();
  int wait_ms = atomic_load(&exit_wait_ms);
  if (!hooks)
    return; /* no group was ever made */
  if (!hooks->stop_groups(wait_ms))
    workers_stuck = true; /* a teardown still running may be inside MPI */
  int left = wait_ms - (int)((evmpi__now_ns() - start) / 1000000);
  /* Finalising under a thread that is still inside a collective would
   * unload the code it runs (and hang or crash). */
  if (!hooks->wait_detached(left > 0 ? left : 0))
    workers_stuck = true;
}

static int on_finalize(MPI_Comm comm, int keyval, void *value, void *extra) {
  (void)comm, (void)keyval, (void)value, (void)extra;
  stop_groups();
  return MPI_SUCCESS;
}

/* After a group broke (a collective or a send or receive timed out), a
 * peer may be unreachable, and Open MPI's MPI_Finalize waits for every
 * process of the job (a fence through the daemons) for as long as the
 * daemons live: minutes, with the default keepalive, across a dead link.
 * So MPI_Finalize then runs under a guard thread that ends the process
 * (status EVMPI_EXIT_STUCK_STATUS, with a line on stderr) when it has not
 * returned within the exit wait. A link that came back lets it return. */
#define EVMPI_EXIT_STUCK_STATUS 1

static pthread_mutex_t guard_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t guard_cv; /* CLOCK_MONOTONIC */
static bool finalize_returned;  /* under guard_mu */

static void *finalize_guard(void *arg) {
  int ms = (int)(intptr_t)arg;
  struct timespec ts = evmpi__timespec_after(CLOCK_MONOTONIC, (int64_t)ms * 1000000);
  pthread_mutex_lock(&guard_mu);
  while (!finalize_returned)
    if (pthread_cond_timedwait(&guard_cv, &guard_mu, &ts) == ETIMEDOUT)
      break;
  bool returned = finalize_returned;
  pthread_mutex_unlock(&guard_mu);
  if (!returned) {
    static const char msg[] = "evmpi: MPI_Finalize did not return within EVMPI_EXIT_WAIT_MS "
                              "after a group broke (a peer may be unreachable); the process "
                              "ends without it\n";
    ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)n;
    _exit(EVMPI_EXIT_STUCK_STATUS);
  }
  return NULL;
}

static void finalize_bounded(int ms) {
  evmpi__cond_init_monotonic(&guard_cv);
  pthread_t guard;
  bool guarded = pthread_create(&guard, NULL, finalize_guard, (void *)(intptr_t)ms) == 0;
  MPI_Finalize();
  if (!guarded)
    return;
  pthread_mutex_lock(&guard_mu);
  finalize_returned = true;
  pthread_cond_signal(&guard_cv);
  pthread_mutex_unlock(&guard_mu);
  pthread_join(guard, NULL);
}

static void finalize_at_exit(void) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized)
    return;
  stop_groups();
  /* A worker still stuck in MPI: leave MPI to the process's end (MPI_Finalize
   * would unload the code it runs). The job's launcher sees the process
   * end without MPI_Finalize. */
  if (workers_stuck)
    return;
  if (hooks && hooks->any_broken())
    finalize_bounded(exit_wait_ms);
  else
    MPI_Finalize();
}

void evmpi__mpi_set_exit_wait_ms(int ms) { atomic_store(&exit_wait_ms, ms); }
int evmpi__mpi_exit_wait_ms(void) { return atomic_load(&exit_wait_ms); }

/* Registers on_finalize, once MPI is initialised, and what one MPI needs
 * for its request errors to be values (mpi_ext.c). */
static int hook_finalize(void) {
  int rc = evmpi__mpi_hook_request_errors();
  if (rc != EVMPI_OK)
    return rc;
  int keyval = MPI_KEYVAL_INVALID;
  if (MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, on_finalize, &keyval, NULL) != MPI_SUCCESS ||
      MPI_Comm_set_attr(MPI_COMM_SELF, keyval, NULL) != MPI_SUCCESS)
    return evmpi__fail(EVMPI_ERR_MPI, "cannot register evmpi's MPI_Finalize hook");
  /* Freed now: MPI keeps it until the attribute goes (at MPI_Finalize,
   * which then still calls on_finalize), and nothing of it leaks. */
  MPI_Comm_free_keyval(&keyval);
  return EVMPI_OK;
}

static int init_locked(void) {
  int initialized = 0, finalized = 0, provided = 0;
  MPI_Finalized(&finalized);
  if (finalized)
    return evmpi__fail(EVMPI_ERR_STATE, "MPI has already been finalized");
  MPI_Initialized(&initialized);
  if (initialized) {
    MPI_Query_thread(&provided);
    if (provided < EVMPI_THREAD_LEVEL)
      return evmpi__fail(EVMPI_ERR_MPI, "MPI was initialised by the application with %s; evmpi "
                         "needs %s (use MPI_Init_thread)", level_name(provided),
                         level_name(EVMPI_THREAD_LEVEL));
    return hook_finalize();
  }
  int rc = MPI_Init_thread(NULL, NULL, EVMPI_THREAD_LEVEL, &provided);
  if (rc != MPI_SUCCESS)
    return evmpi__fail(EVMPI_ERR_MPI, "MPI_Init_thread failed with code %d", rc);
  if (atexit(finalize_at_exit) != 0)
    return evmpi__fail(EVMPI_ERR_STATE, "cannot register the MPI exit handler");
  if (provided < EVMPI_THREAD_LEVEL)
    return evmpi__fail(EVMPI_ERR_MPI, "this MPI provides %s; evmpi needs %s",
                       level_name(provided), level_name(EVMPI_THREAD_LEVEL));
  return hook_finalize();
}

int evmpi__mpi_ensure_init(const evmpi_finalize_hooks_t *h) {
  pthread_mutex_lock(&env_lock);
  if (!hooks)
    hooks = h;
  int finalized = 0;
  MPI_Finalized(&finalized); /* callable at any time, even after MPI_Finalize */
  int rc = finalized ? evmpi__fail(EVMPI_ERR_STATE, "MPI has already been finalized")
                     : EVMPI_OK;
  if (rc == EVMPI_OK && !env_ready)
    rc = init_locked();
  if (rc == EVMPI_OK)
    env_ready = true;
  pthread_mutex_unlock(&env_lock);
  return rc;
}
