/* mpi_env.c: MPI is initialised once, at the threading level evmpi needs,
 * and finalised at exit only when evmpi initialised it. */
#include "evmpi-internal.h"

#include <stdlib.h>

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

/* How long exit waits for a broken group's worker to come back out of
 * MPI (its peers arrived late) before it gives up on MPI_Finalize. */
#define DETACHED_EXIT_WAIT_MS 5000

static void finalize_at_exit(void) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized)
    return;
  /* Finalising under a thread that is still inside a collective would
   * unload the code it runs (and hang or crash): wait for it, and if it
   * stays stuck, leave MPI to the process's end. */
  if (evmpi__worker_wait_detached(DETACHED_EXIT_WAIT_MS))
    MPI_Finalize();
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
    return EVMPI_OK;
  }
  int rc = MPI_Init_thread(NULL, NULL, EVMPI_THREAD_LEVEL, &provided);
  if (rc != MPI_SUCCESS)
    return evmpi__fail(EVMPI_ERR_MPI, "MPI_Init_thread failed with code %d", rc);
  if (atexit(finalize_at_exit) != 0)
    return evmpi__fail(EVMPI_ERR_STATE, "cannot register the MPI exit handler");
  if (provided < EVMPI_THREAD_LEVEL)
    return evmpi__fail(EVMPI_ERR_MPI, "this MPI provides %s; evmpi needs %s",
                       level_name(provided), level_name(EVMPI_THREAD_LEVEL));
  return EVMPI_OK;
}

int evmpi__mpi_ensure_init(void) {
  pthread_mutex_lock(&env_lock);
  int rc = env_ready ? EVMPI_OK : init_locked();
  if (rc == EVMPI_OK)
    env_ready = true;
  pthread_mutex_unlock(&env_lock);
  return rc;
}
