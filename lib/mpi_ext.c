/* mpi_ext.c: what one MPI offers or does beyond the standard, behind one
 * guard each, so that another MPI adds its own branch here and nowhere
 * else. */
#define _GNU_SOURCE /* PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP */
#include "mpi_ext-internal.h"
#include "tls-internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#if defined(OPEN_MPI) && OPEN_MPI
#include <dlfcn.h>
#include <mpi-ext.h> /* MPIX_CUDA_AWARE_SUPPORT, MPIX_Query_cuda_support */
#endif

int evmpi__mpi_query_cuda_support(void) {
#if defined(OPEN_MPI) && OPEN_MPI && defined(MPIX_CUDA_AWARE_SUPPORT)
  /* The macro says whether this Open MPI was built with CUDA; the call
   * whether the library loaded at run time supports it now (Debian's is
   * built without: the macro is 0 and the call returns 0). */
  return MPIX_Query_cuda_support() == 1;
#elif defined(MPICH) && defined(MPIX_GPU_SUPPORT_CUDA)
  /* MPICH 4 and its derivatives: one query per GPU kind. */
  int supported = 0;
  if (MPIX_GPU_query_support(MPIX_GPU_SUPPORT_CUDA, &supported) != MPI_SUCCESS)
    return 0;
  return supported != 0;
#else
  return 0;
#endif
}

bool evmpi__mpi_rendezvous_needs_polling(void) {
#if defined(MPICH)
  /* MPICH and its derivatives move a large message a pipeline step per
   * MPI call on either side: a poller that sleeps between tests stalls
   * it (doc/performance.md has the ping-pong figures). */
  return true;
#else
  /* Open MPI's shared-memory rendezvous is one single copy once both
   * sides have seen it; a poller that keeps yielding meanwhile only took
   * CPU from the ranks that share the cores (16 MiB ping-pongs slower). */
  return false;
#endif
}

/* MPICH raises the error of a completed request (a truncated receive) on
 * MPI_COMM_WORLD's handler, not on the request's communicator, in every
 * test call (MPI_Test, MPI_Testsome, MPI_Request_get_status): with the
 * default MPI_ERRORS_ARE_FATAL that ends the job, and an MPI error would
 * no longer be a value. So where MPI_COMM_WORLD has the default handler,
 * evmpi replaces it with one that returns while one of evmpi's tests runs
 * on the calling thread, and otherwise does what the default does. An
 * application that set a handler of its own keeps it (and gets those
 * errors). */
static EVMPI__HOT_TLS int in_test;

void evmpi__mpi_test_begin(void) { in_test++; }
void evmpi__mpi_test_end(void) { in_test--; }

#if defined(MPICH)
static void on_world_error(MPI_Comm *comm, int *code, ...) {
  if (in_test)
    return; /* the test call returns the code; the work gets the message */
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(*code, text, &len) != MPI_SUCCESS)
    snprintf(text, sizeof text, "MPI error %d", *code);
  fprintf(stderr, "Fatal MPI error on MPI_COMM_WORLD: %s\n", text);
  MPI_Abort(*comm, *code);
}
#endif

int evmpi__mpi_hook_request_errors(void) {
#if defined(MPICH)
  MPI_Errhandler current = MPI_ERRHANDLER_NULL;
  if (MPI_Comm_get_errhandler(MPI_COMM_WORLD, &current) != MPI_SUCCESS)
    return EVMPI_OK;
  bool fatal = current == MPI_ERRORS_ARE_FATAL;
  MPI_Errhandler_free(&current);
  if (!fatal)
    return EVMPI_OK;
  MPI_Errhandler eh;
  if (MPI_Comm_create_errhandler(on_world_error, &eh) != MPI_SUCCESS ||
      MPI_Comm_set_errhandler(MPI_COMM_WORLD, eh) != MPI_SUCCESS)
    return evmpi__fail(EVMPI_ERR_MPI, "cannot set evmpi's error handler on MPI_COMM_WORLD");
  MPI_Errhandler_free(&eh);
#endif
  return EVMPI_OK;
}

/* Open MPI's ob1 takes a receive that a message matched off its posted
 * queue under the communicator's matching lock, but marks it matched only
 * after releasing that lock (4.1, and its main branch alike). An
 * MPI_Cancel of that receive in between finds it unmatched, unlinks it a
 * second time and completes it once more, as cancelled: the queue's links
 * and length go wrong (a later MPI_Irecv or MPI_Cancel crashes, later
 * messages are never matched) and the message is lost. Any thread inside
 * MPI can make that match: a send to its own rank matches on the sending
 * thread, an arriving message on whichever thread progresses MPI. So on
 * Open MPI evmpi's own calls that can match (issuing a send or a receive,
 * testing requests) share a lock that a cancel takes alone; they are all
 * short, nonblocking calls. A blocking collective on a worker thread, and
 * the application's own MPI calls, cannot take part without holding a
 * cancel up for as long as they run (doc/design.md, "Open MPI's cancel
 * race"). Writers first: a steady stream of sends does not starve an
 * abort; no holder of the shared side takes it again. */
#if defined(OPEN_MPI) && OPEN_MPI
static pthread_rwlock_t match_lock = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;

void evmpi__mpi_match_enter(void) { pthread_rwlock_rdlock(&match_lock); }
void evmpi__mpi_match_leave(void) { pthread_rwlock_unlock(&match_lock); }

int evmpi__mpi_cancel(MPI_Request *req) {
  pthread_rwlock_wrlock(&match_lock);
  int rc = MPI_Cancel(req);
  pthread_rwlock_unlock(&match_lock);
  return rc;
}
#else
void evmpi__mpi_match_enter(void) {}
void evmpi__mpi_match_leave(void) {}
int evmpi__mpi_cancel(MPI_Request *req) { return MPI_Cancel(req); }
#endif

int evmpi__mpi_test(MPI_Request *req, int *flag, MPI_Status *status) {
  evmpi__mpi_match_enter();
  evmpi__mpi_test_begin();
  int rc = MPI_Test(req, flag, status);
  evmpi__mpi_test_end();
  evmpi__mpi_match_leave();
  return rc;
}

/* A long blocking collective spins inside MPI on its worker's core, which
 * the group's loop thread shares (a rank is bound to one core by
 * default): the loop thread then got the core only when the scheduler took
 * it from the worker, a time slice later, and a send or receive waited
 * that long (doc/performance.md, "MPI yields inside long collectives"). Open
 * MPI's progress engine can yield the core after every pass that found
 * nothing to do (its mpi_yield_when_idle, which mpirun sets on an
 * oversubscribed node); libopen-pal exports the switch. evmpi turns it on
 * while at least one long collective runs in the process, and puts back
 * what it was when the last one ends: a loop thread with something to do
 * then gets the core at the worker's next idle pass. Looked up at run time
 * (an Open MPI without the symbol, or another MPI, does nothing); the
 * count and the switch change under one lock, so that an end and a begin
 * on two threads never leave it off while a collective runs. */
#if defined(OPEN_MPI) && OPEN_MPI
static pthread_mutex_t yield_mu = PTHREAD_MUTEX_INITIALIZER;
static bool (*set_yield)(bool);  /* under yield_mu, looked up once */
static bool yield_looked_up;     /* under yield_mu */
static int yield_users;          /* under yield_mu */
static bool yield_before;        /* under yield_mu: the switch when the first began */

void evmpi__mpi_yield_begin(void) {
  pthread_mutex_lock(&yield_mu);
  if (!yield_looked_up) {
    yield_looked_up = true;
    /* The cast goes through a data pointer: ISO C has no conversion from
     * void * to a function pointer, POSIX's dlsym promises it works. */
    void *sym = dlsym(RTLD_DEFAULT, "opal_progress_set_yield_when_idle");
    memcpy(&set_yield, &sym, sizeof set_yield);
  }
  if (set_yield && yield_users++ == 0)
    yield_before = set_yield(true);
  pthread_mutex_unlock(&yield_mu);
}

void evmpi__mpi_yield_end(void) {
  pthread_mutex_lock(&yield_mu);
  if (set_yield && --yield_users == 0)
    set_yield(yield_before);
  pthread_mutex_unlock(&yield_mu);
}
#else
void evmpi__mpi_yield_begin(void) {}
void evmpi__mpi_yield_end(void) {}
#endif
