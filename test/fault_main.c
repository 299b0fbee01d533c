/* fault_main.c: a program that fails on purpose, for test/faults.sh.
 *   fault_main kill   rank 1 kills itself with SIGKILL in the middle of a
 *                     run of allreduces (group timeout 5 s on every rank)
 *   fault_main abort  rank 0 has a pending receive and queued collectives
 *                     and calls evmpi_pg_abort; the others wait for a
 *                     message from rank 0 that never comes (not in a
 *                     collective: a barrier against an allreduce is a
 *                     mismatch, which MPICH may complete, and the others
 *                     would then exit before the abort)
 * Either way the job must end by itself, with a failure status, and not
 * hang. Rank 0 prints what it saw before the end.
 *   fault_main exit   rank 0's allreduce times out (200 ms) because the
 *                     others join only when rank 0, after the timeout,
 *                     tells them to (over MPI_COMM_WORLD); rank 0 destroys
 *                     the broken group, tells them, and returns from main
 *                     at once, while its worker is still inside
 *                     MPI_Allreduce. The job must end with
 *                     status 0: MPI is finalised only after the worker has
 *                     come back out (it used to be finalised under it and
 *                     crash in the unloaded component's code). */
#include <event2/event.h>
#include <evmpi.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int run_kill(evmpi_pg_t *pg, struct event_base *base) {
  int rank = evmpi_pg_rank(pg);
  evmpi_pg_set_timeout(pg, 5000);
  for (int i = 0; i < 1000000; i++) {
    if (rank == 1 && i == 50) {
      printf("rank 1: SIGKILL after %d allreduces\n", i);
      fflush(stdout);
      kill(getpid(), SIGKILL);
    }
    double v = 1;
    evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_FLOAT64, 1);
    evmpi_work_t *w;
    if (evmpi_allreduce(pg, &t, EVMPI_SUM, &w) != EVMPI_OK) {
      printf("rank %d: allreduce refused: %s\n", rank, evmpi_last_error());
      return 1;
    }
    int rc = evmpi_work_wait(w, -1);
    if (rc != EVMPI_OK) {
      printf("rank %d: allreduce %d failed: %s\n", rank, i, evmpi_work_error(w));
      fflush(stdout);
      evmpi_work_release(w);
      return 1;
    }
    evmpi_work_release(w);
    event_base_loop(base, EVLOOP_NONBLOCK);
  }
  return 0;
}

static int run_abort(evmpi_pg_t *pg) {
  int rank = evmpi_pg_rank(pg);
  static int32_t in, x = 1;
  evmpi_tensor_t t = evmpi_tensor_flat(&in, EVMPI_INT32, 1);
  evmpi_tensor_t tx = evmpi_tensor_flat(&x, EVMPI_INT32, 1);
  evmpi_work_t *w;
  if (rank == 0) {
    evmpi_work_t *r, *q;
    evmpi_recv_anysource(pg, &t, 77, &r);
    evmpi_barrier(pg, &w);       /* never completes: the others call no collective */
    evmpi_allreduce(pg, &tx, EVMPI_SUM, &q);
    printf("rank 0: calling evmpi_pg_abort with a receive and two collectives pending\n");
    fflush(stdout);
    evmpi_pg_abort(pg);
    printf("rank 0: evmpi_pg_abort returned\n");
    return 0;
  }
  evmpi_recv(pg, &t, 0, 78, &w); /* rank 0 sends nothing */
  evmpi_work_wait(w, -1);
  return 0;
}

static int run_exit(evmpi_pg_t *pg, struct event_base *base) {
  int rank = evmpi_pg_rank(pg), size = evmpi_pg_size(pg);
  static double v = 1; /* MPI may write it after the timeout: never freed */
  evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_FLOAT64, 1);
  evmpi_work_t *w;
  int go = 1;
  if (rank == 0)
    evmpi_pg_set_timeout(pg, 200);
  else /* MPI_THREAD_MULTIPLE (evmpi's level): this thread may call MPI */
    MPI_Recv(&go, 1, MPI_INT, 0, 4711, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  if (evmpi_allreduce(pg, &t, EVMPI_SUM, &w) != EVMPI_OK)
    return 1;
  int rc = evmpi_work_wait(w, -1);
  if (rank == 0)
    printf("rank 0: allreduce %s; destroying the group and exiting with its worker inside "
           "MPI\n", rc == EVMPI_ERR_TIMEOUT ? "timed out" : "did not time out");
  evmpi_work_release(w);
  evmpi_pg_destroy(pg);
  if (rank == 0)
    for (int r = 1; r < size; r++)
      MPI_Send(&go, 1, MPI_INT, r, 4711, MPI_COMM_WORLD);
  event_base_free(base);
  return (rank == 0) == (rc == EVMPI_ERR_TIMEOUT) ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc != 2 || (strcmp(argv[1], "kill") != 0 && strcmp(argv[1], "abort") != 0 &&
                    strcmp(argv[1], "exit") != 0)) {
    fprintf(stderr, "usage: fault_main kill|abort|exit\n");
    return 2;
  }
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg;
  if (evmpi_pg_create(base, NULL, 0, &pg) != EVMPI_OK) {
    fprintf(stderr, "%s\n", evmpi_last_error());
    return 2;
  }
  if (strcmp(argv[1], "exit") == 0)
    return run_exit(pg, base); /* an ordinary exit: MPI finalised at exit */
  int rc = strcmp(argv[1], "kill") == 0 ? run_kill(pg, base) : run_abort(pg);
  /* A failed peer leaves this group broken or stuck: end without destroy. */
  fflush(stdout);
  _exit(rc);
}
