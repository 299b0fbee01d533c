/* exit_paths.c: a program that leaves in one of the ways services do, for
 * test/exit_paths.sh, which runs each many times and wants exit status 0
 * from every rank every time. Usage: exit_paths MODE
 *   live        main returns with a live group (user base, freed already)
 *               and a posted receive; evmpi initialised MPI
 *   live-null   the same with two NULL-base groups whose receives have
 *               callbacks (which must not run), after an allreduce each
 *   deferred    a NULL-base group destroyed from its own callback, then
 *               main returns at once (the teardown is still running)
 *   exit-in-cb  a callback destroys its NULL-base group (deferred to the
 *               end of its batch, which never comes) and calls exit(0),
 *               with a receive still posted
 *   app-mpi     the application initialises MPI and calls MPI_Finalize
 *               with a live group and a posted receive; evmpi_pg_create
 *               after that returns EVMPI_ERR_STATE
 *   broken-live both ranks' groups are broken by a receive that missed
 *               its p2p deadline, with a receive from any rank still
 *               pending (no deadline) when main returns; both reach
 *               MPI_Finalize, which stops the group first
 *   broken-peer-gone  (2 ranks; exit_paths.sh expects status 1 here) rank
 *               0's receive from rank 1 misses its deadline, which breaks
 *               the group, and main returns; rank 1 never reaches
 *               MPI_Finalize (it sleeps 60 s, as a hung or unreachable
 *               peer would), so rank 0's MPI_Finalize cannot complete and
 *               evmpi's guard must end the process within the exit wait
 * It prints "FAIL: ..." and exits 1 when a call it makes misbehaves. */
#include <event2/event.h>
#include <evmpi.h>
#include <mpi.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int fail(const char *what) {
  fprintf(stderr, "FAIL: %s: %s\n", what, evmpi_last_error());
  return 1;
}

static int32_t rbuf, vbuf;

/* A receive from this rank itself that nobody sends. */
static int post_recv(evmpi_pg_t *pg, evmpi_work_t **w) {
  evmpi_tensor_t t = evmpi_tensor_flat(&rbuf, EVMPI_INT32, 1);
  return evmpi_recv(pg, &t, evmpi_pg_rank(pg), 4242, w);
}

static void never_cb(evmpi_work_t *w, void *arg) {
  /* At exit no callback runs: main's frame, and arg with it, is gone. */
  (void)w, (void)arg;
  fprintf(stderr, "FAIL: a callback ran after main returned\n");
  _Exit(1);
}

static atomic_int destroyed;

static void destroy_cb(evmpi_work_t *w, void *arg) {
  evmpi_work_release(w);
  evmpi_pg_destroy(arg);
  atomic_store(&destroyed, 1);
}

static int mode_live(void) {
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg;
  if (evmpi_pg_create(base, NULL, 0, &pg) != EVMPI_OK)
    return fail("pg_create");
  evmpi_work_t *w;
  if (post_recv(pg, &w) != EVMPI_OK)
    return fail("recv");
  /* The application frees its loop and forgets the group. */
  event_base_free(base);
  return 0;
}

static int mode_live_null(void) {
  evmpi_pg_t *a, *b;
  if (evmpi_pg_create(NULL, NULL, 0, &a) != EVMPI_OK ||
      evmpi_pg_create(NULL, NULL, 0, &b) != EVMPI_OK)
    return fail("pg_create");
  evmpi_pg_t *groups[2] = {a, b};
  for (int g = 0; g < 2; g++) {
    evmpi_tensor_t t = evmpi_tensor_flat(&vbuf, EVMPI_INT32, 1);
    evmpi_work_t *w;
    if (evmpi_allreduce(groups[g], &t, EVMPI_SUM, &w) != EVMPI_OK)
      return fail("allreduce");
    if (evmpi_work_wait(w, 30000) != EVMPI_OK)
      return fail("allreduce wait");
    evmpi_work_release(w);
    if (post_recv(groups[g], &w) != EVMPI_OK ||
        evmpi_work_on_complete(w, never_cb, NULL) != EVMPI_OK)
      return fail("recv");
  }
  return 0;
}

static int mode_deferred(void) {
  evmpi_pg_t *pg;
  if (evmpi_pg_create(NULL, NULL, 0, &pg) != EVMPI_OK)
    return fail("pg_create");
  /* Receives for the teardown to cancel, so that it takes a while. */
  static int32_t many[64];
  for (int i = 0; i < 64; i++) {
    evmpi_tensor_t r = evmpi_tensor_flat(&many[i], EVMPI_INT32, 1);
    evmpi_work_t *rw;
    if (evmpi_recv(pg, &r, evmpi_pg_rank(pg), 4243, &rw) != EVMPI_OK)
      return fail("recv");
    evmpi_work_release(rw);
  }
  evmpi_tensor_t t = evmpi_tensor_flat(&vbuf, EVMPI_INT32, 1);
  evmpi_work_t *w;
  if (evmpi_allreduce(pg, &t, EVMPI_SUM, &w) != EVMPI_OK ||
      evmpi_work_on_complete(w, destroy_cb, pg) != EVMPI_OK)
    return fail("allreduce");
  /* Leave as soon as the callback has asked for destroy: the teardown
   * itself runs on after it, on the group's loop thread. */
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += 30;
  for (;;) {
    if (atomic_load(&destroyed))
      break;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > until.tv_sec)
      break;
    sched_yield();
  }
  if (!atomic_load(&destroyed)) {
    fprintf(stderr, "FAIL: the allreduce's callback never ran\n");
    return 1;
  }
  return 0;
}

static void destroy_and_exit_cb(evmpi_work_t *w, void *arg) {
  evmpi_work_release(w);
  evmpi_pg_destroy(arg);
  exit(0);
}

static int mode_exit_in_cb(void) {
  evmpi_pg_t *pg;
  if (evmpi_pg_create(NULL, NULL, 0, &pg) != EVMPI_OK)
    return fail("pg_create");
  evmpi_work_t *r;
  if (post_recv(pg, &r) != EVMPI_OK)
    return fail("recv");
  evmpi_tensor_t t = evmpi_tensor_flat(&vbuf, EVMPI_INT32, 1);
  evmpi_work_t *w;
  if (evmpi_allreduce(pg, &t, EVMPI_SUM, &w) != EVMPI_OK ||
      evmpi_work_on_complete(w, destroy_and_exit_cb, pg) != EVMPI_OK)
    return fail("allreduce");
  struct timespec s = {0, 10000000};
  for (int i = 0; i < 3000; i++)
    nanosleep(&s, NULL);
  fprintf(stderr, "FAIL: the callback never ended the process\n");
  return 1;
}

static int mode_app_mpi(void) {
  int provided = 0;
  MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
  evmpi_pg_t *pg;
  if (evmpi_pg_create(NULL, NULL, 0, &pg) != EVMPI_OK)
    return fail("pg_create");
  evmpi_work_t *w;
  if (post_recv(pg, &w) != EVMPI_OK || evmpi_work_on_complete(w, never_cb, NULL) != EVMPI_OK)
    return fail("recv");
  MPI_Finalize(); /* stops the group first */
  if (evmpi_work_wait(w, 10000) != EVMPI_ERR_ABORTED) {
    fprintf(stderr, "FAIL: the receive did not fail when MPI was finalized: %s\n",
            evmpi_work_error(w) ? evmpi_work_error(w) : "(no error)");
    return 1;
  }
  evmpi_work_release(w);
  evmpi_pg_destroy(pg); /* stopped already: a no-op */
  evmpi_pg_t *late = NULL;
  int rc = evmpi_pg_create(NULL, NULL, 0, &late);
  if (rc != EVMPI_ERR_STATE || late) {
    fprintf(stderr, "FAIL: pg_create after MPI_Finalize returned %s, not EVMPI_ERR_STATE\n",
            evmpi_strerror(rc));
    return 1;
  }
  if (!strstr(evmpi_last_error(), "finalized")) {
    fprintf(stderr, "FAIL: pg_create after MPI_Finalize says \"%s\"\n", evmpi_last_error());
    return 1;
  }
  return 0;
}

static int mode_broken_live(void) {
  evmpi_pg_t *pg;
  if (evmpi_pg_create(NULL, NULL, 0, &pg) != EVMPI_OK)
    return fail("pg_create");
  evmpi_tensor_t t = evmpi_tensor_flat(&rbuf, EVMPI_INT32, 1);
  evmpi_tensor_t v = evmpi_tensor_flat(&vbuf, EVMPI_INT32, 1);
  evmpi_work_t *w, *any;
  if (evmpi_recv_anysource(pg, &v, 4244, &any) != EVMPI_OK ||
      evmpi_work_on_complete(any, never_cb, NULL) != EVMPI_OK)
    return fail("recv_anysource");
  if (evmpi_pg_set_p2p_timeout(pg, 100) != EVMPI_OK ||
      evmpi_recv(pg, &t, evmpi_pg_rank(pg), 4243, &w) != EVMPI_OK)
    return fail("recv with a deadline");
  if (evmpi_work_wait(w, 20000) != EVMPI_ERR_TIMEOUT)
    return fail("the receive's deadline");
  evmpi_work_release(w);
  evmpi_work_t *b = NULL;
  if (evmpi_barrier(pg, &b) != EVMPI_ERR_ABORTED || !strstr(evmpi_last_error(), "broken")) {
    fprintf(stderr, "FAIL: the missed deadline did not break the group\n");
    return 1;
  }
  return 0; /* evmpi's exit handler stops the group, then MPI_Finalize */
}

static int mode_broken_peer_gone(void) {
  evmpi_pg_t *pg;
  if (evmpi_pg_create(NULL, NULL, 0, &pg) != EVMPI_OK)
    return fail("pg_create");
  if (evmpi_pg_size(pg) != 2) {
    fprintf(stderr, "FAIL: broken-peer-gone needs 2 ranks, not %d\n", evmpi_pg_size(pg));
    return 1;
  }
  if (evmpi_pg_rank(pg) == 1) {
    struct timespec ts = {60, 0};
    nanosleep(&ts, NULL);
    _Exit(0);
  }
  evmpi_tensor_t t = evmpi_tensor_flat(&rbuf, EVMPI_INT32, 1);
  evmpi_work_t *w;
  if (evmpi_pg_set_p2p_timeout(pg, 100) != EVMPI_OK || evmpi_recv(pg, &t, 1, 4243, &w) != EVMPI_OK)
    return fail("recv with a deadline");
  if (evmpi_work_wait(w, 20000) != EVMPI_ERR_TIMEOUT)
    return fail("the receive's deadline");
  evmpi_work_release(w);
  return 0; /* evmpi's exit handler: MPI_Finalize, guarded */
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "live") == 0)
    return mode_live();
  if (strcmp(mode, "live-null") == 0)
    return mode_live_null();
  if (strcmp(mode, "deferred") == 0)
    return mode_deferred();
  if (strcmp(mode, "exit-in-cb") == 0)
    return mode_exit_in_cb();
  if (strcmp(mode, "app-mpi") == 0)
    return mode_app_mpi();
  if (strcmp(mode, "broken-live") == 0)
    return mode_broken_live();
  if (strcmp(mode, "broken-peer-gone") == 0)
    return mode_broken_peer_gone();
  fprintf(stderr, "usage: exit_paths live|live-null|deferred|exit-in-cb|app-mpi|broken-live|"
                  "broken-peer-gone\n");
  return 2;
}
