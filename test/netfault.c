/* netfault.c: work under way when the network link between two hosts is
 * cut. Run by tools/multihost-faults at 2 ranks, one per namespace host,
 * which cuts host 2's link (rank 1's) when rank 1 says it is ready:
 *
 *   netfault coll   allreduces when the link goes (and stays) down
 *   netfault recv   receives pending on both sides
 *   netfault send   an 8 MiB send pending (rendezvous), and the receive
 *                   that matched it after the cut
 *   netfault flap   an allreduce when the link goes down for 3 s: the
 *                   group is broken; once the link is back, a new group
 *                   works and the job ends with status 0
 *
 * Each rank writes its verdict to DIR/rank.R ("PASS ..." or "FAIL ...",
 * one line) as soon as it has one, because with the link down rank 1's
 * stdout cannot reach mpirun. What must hold (the bounds doc/multihost.md
 * documents): the work fails with EVMPI_ERR_TIMEOUT no later than the
 * timeout T plus SLACK_MS after it started, and evmpi_pg_destroy returns
 * within T plus SLACK_MS. The process then returns from main: evmpi's
 * exit path must end it (the script checks that the job ends and leaves
 * no process).
 *
 * Environment (set by the script): NETFAULT_DIR (verdicts, and the files
 * "ready", written by rank 1 when the link may go, "cut" and "restored",
 * written by the script), NETFAULT_TIMEOUT_MS (T, default 2000),
 * NETFAULT_ABORT (1: end the job with MPI_Abort after the verdict, as the
 * MPICH runs do; doc/multihost.md says why). */
#include <evmpi.h>

#include <event2/event.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Beyond T: the poller and the watchdog see a deadline within a
 * millisecond or two; a loaded 2-core machine adds scheduling delays. */
#define SLACK_MS 1500
/* How long a rank waits for the script's files. */
#define FILE_WAIT_MS 20000

static const char *dir;
static int rank = -1;
static int timeout_ms = 2000;
static char verdict[1024];

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Writes the verdict file (once: the first verdict stands). */
static void say(const char *fmt, ...) {
  if (verdict[0])
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(verdict, sizeof verdict, fmt, ap);
  va_end(ap);
  char path[512];
  snprintf(path, sizeof path, "%s/rank.%d", dir, rank);
  FILE *f = fopen(path, "w");
  if (f) {
    fprintf(f, "%s\n", verdict);
    fclose(f);
  }
  printf("rank %d: %s\n", rank, verdict);
  fflush(stdout);
}

#define FAIL(...) do { say("FAIL " __VA_ARGS__); return 1; } while (0)

static void touch(const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (f)
    fclose(f);
}

static int wait_file(const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  double until = now_ms() + FILE_WAIT_MS;
  while (access(path, F_OK) != 0) {
    if (now_ms() > until)
      return -1;
    usleep(10000);
  }
  return 0;
}

static void noop(evmpi_work_t *w, void *arg) { (void)w, (void)arg; }

/* Runs base until w completes or ms pass; the time it took, or -1. */
static double run_until_done(struct event_base *base, evmpi_work_t *w, int ms) {
  double start = now_ms();
  evmpi_work_on_complete(w, noop, NULL);
  while (!evmpi_work_is_completed(w)) {
    if (now_ms() - start > ms)
      return -1;
    struct timeval tv = {0, 10000};
    event_base_loopexit(base, &tv);
    event_base_loop(base, EVLOOP_ONCE);
  }
  return now_ms() - start;
}

/* Waits for w (started at t0) and checks that it failed with
 * EVMPI_ERR_TIMEOUT within T + SLACK_MS of t0; fills what with a summary. */
static int expect_timeout(struct event_base *base, evmpi_work_t *w, double t0, const char *name,
                          char *what, size_t len) {
  if (run_until_done(base, w, timeout_ms + 10 * SLACK_MS) < 0) {
    snprintf(what, len, "%s: nothing completed %d ms after the cut", name,
             timeout_ms + 10 * SLACK_MS);
    return -1;
  }
  double took = now_ms() - t0;
  int st = evmpi_work_status(w);
  const char *err = evmpi_work_error(w);
  snprintf(what, len, "%s ended after %.0f ms with %s: %s", name, took, evmpi_strerror(st),
           err ? err : "(no message)");
  if (st != EVMPI_ERR_TIMEOUT || took > timeout_ms + SLACK_MS)
    return -1;
  return 0;
}

static int destroy_bounded(evmpi_pg_t *pg, char *what, size_t len) {
  double t0 = now_ms();
  evmpi_pg_destroy(pg);
  double took = now_ms() - t0;
  snprintf(what, len, "destroy took %.0f ms", took);
  return took > timeout_ms + SLACK_MS ? -1 : 0;
}

/* Two allreduces on each rank, submitted at once. Rank 0 submits before
 * the cut, rank 1 after it: rank 0's first cannot finish (rank 1's part
 * never arrives), and rank 1's first may (rank 0's part arrived before
 * the cut), but then its second cannot (rank 0 never gets there). Either
 * way, on each rank one of them times out and the other succeeds or is
 * aborted with the group, all within T of the submission. */
static int case_coll(struct event_base *base, evmpi_pg_t *pg, bool flap) {
  static int v[2]; /* a timed-out collective may still write them, late */
  evmpi_work_t *w[2];
  if (rank == 1) { /* the cut host: enters after the cut */
    touch("ready");
    if (wait_file("cut") != 0)
      FAIL("coll: the script never cut the link");
  }
  double t0 = now_ms();
  for (int i = 0; i < 2; i++) {
    v[i] = 1;
    evmpi_tensor_t t = evmpi_tensor_flat(&v[i], EVMPI_INT32, 1);
    if (evmpi_allreduce(pg, &t, EVMPI_SUM, &w[i]) != EVMPI_OK)
      FAIL("coll: allreduce: %s", evmpi_last_error());
  }
  char a[700] = "", b[100];
  int timeouts = 0;
  for (int i = 0; i < 2; i++) {
    if (run_until_done(base, w[i], timeout_ms + 10 * SLACK_MS) < 0)
      FAIL("coll: allreduce %d did not complete %d ms after the cut", i + 1,
           timeout_ms + 10 * SLACK_MS);
    double took = now_ms() - t0;
    int st = evmpi_work_status(w[i]);
    size_t at = strlen(a);
    snprintf(a + at, sizeof a - at, "%sallreduce %d: %s after %.0f ms%s%s", i ? "; " : "", i + 1,
             evmpi_strerror(st), took, evmpi_work_error(w[i]) ? ": " : "",
             evmpi_work_error(w[i]) ? evmpi_work_error(w[i]) : "");
    if (took > timeout_ms + SLACK_MS)
      FAIL("coll: %s (want every allreduce done within %d ms)", a, timeout_ms + SLACK_MS);
    if (st == EVMPI_ERR_TIMEOUT)
      timeouts++;
    else if (st != EVMPI_OK && st != EVMPI_ERR_ABORTED)
      FAIL("coll: %s (want EVMPI_ERR_TIMEOUT, or success or EVMPI_ERR_ABORTED)", a);
    evmpi_work_release(w[i]);
  }
  if (timeouts != 1)
    FAIL("coll: %s (want exactly one EVMPI_ERR_TIMEOUT)", a);
  /* Broken: new work is refused at once. */
  evmpi_tensor_t t = evmpi_tensor_flat(&v[0], EVMPI_INT32, 1);
  evmpi_work_t *late;
  if (evmpi_allreduce(pg, &t, EVMPI_SUM, &late) != EVMPI_ERR_ABORTED)
    FAIL("coll: an allreduce after the timeout was not refused as broken");
  if (destroy_bounded(pg, b, sizeof b) != 0)
    FAIL("coll: %s; %s (want within %d ms)", a, b, timeout_ms + SLACK_MS);
  if (!flap) {
    say("PASS coll: %s; %s", a, b);
    return 0;
  }
  /* Recovery: the broken group stays broken; once the link is back, a
   * new group over the same ranks works. */
  if (wait_file("restored") != 0)
    FAIL("flap: the script never restored the link");
  evmpi_pg_t *again = NULL;
  if (evmpi_pg_create(base, NULL, 0, &again) != EVMPI_OK)
    FAIL("flap: re-creating the group: %s", evmpi_last_error());
  evmpi_pg_set_timeout(again, 10 * timeout_ms);
  int x = rank + 1;
  evmpi_tensor_t tx = evmpi_tensor_flat(&x, EVMPI_INT32, 1);
  evmpi_work_t *wx;
  if (evmpi_allreduce(again, &tx, EVMPI_SUM, &wx) != EVMPI_OK)
    FAIL("flap: allreduce on the new group: %s", evmpi_last_error());
  if (run_until_done(base, wx, 20 * timeout_ms) < 0 || evmpi_work_status(wx) != EVMPI_OK || x != 3)
    FAIL("flap: the new group's allreduce: %s (x = %d)",
         evmpi_work_error(wx) ? evmpi_work_error(wx) : "did not complete", x);
  evmpi_work_release(wx);
  evmpi_pg_destroy(again);
  say("PASS flap: %s; %s; a new group worked once the link was back", a, b);
  return 0;
}

static int case_recv(struct event_base *base, evmpi_pg_t *pg) {
  if (evmpi_pg_set_p2p_timeout(pg, timeout_ms) != EVMPI_OK)
    FAIL("recv: set_p2p_timeout: %s", evmpi_last_error());
  static int v;
  evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_INT32, 1);
  evmpi_work_t *w;
  double t0 = now_ms();
  if (evmpi_recv(pg, &t, 1 - rank, 7, &w) != EVMPI_OK)
    FAIL("recv: %s", evmpi_last_error());
  if (rank == 1) {
    touch("ready");
    if (wait_file("cut") != 0)
      FAIL("recv: the script never cut the link");
  }
  char a[600], b[100];
  if (expect_timeout(base, w, t0, "recv", a, sizeof a) != 0)
    FAIL("recv: %s (want EVMPI_ERR_TIMEOUT within %d ms)", a, timeout_ms + SLACK_MS);
  evmpi_work_release(w);
  if (destroy_bounded(pg, b, sizeof b) != 0)
    FAIL("recv: %s; %s (want within %d ms)", a, b, timeout_ms + SLACK_MS);
  say("PASS recv: %s; %s", a, b);
  return 0;
}

enum { BIG = 8 << 20 };

static int case_send(struct event_base *base, evmpi_pg_t *pg) {
  if (evmpi_pg_set_p2p_timeout(pg, timeout_ms) != EVMPI_OK)
    FAIL("send: set_p2p_timeout: %s", evmpi_last_error());
  /* MPI may still read (or write) it after the work is given up. */
  char *buf = calloc(1, BIG);
  if (!buf)
    FAIL("send: out of memory");
  evmpi_tensor_t t = evmpi_tensor_flat(buf, EVMPI_UINT8, BIG);
  evmpi_work_t *w;
  double t0;
  const char *name = rank == 0 ? "send" : "recv";
  if (rank == 0) {
    t0 = now_ms();
    if (evmpi_send(pg, &t, 1, 9, &w) != EVMPI_OK)
      FAIL("send: %s", evmpi_last_error());
  } else {
    /* The send's first fragment has arrived (or not) when the link goes;
     * the receive after the cut cannot get the rest. */
    touch("ready");
    if (wait_file("cut") != 0)
      FAIL("send: the script never cut the link");
    t0 = now_ms();
    if (evmpi_recv(pg, &t, 0, 9, &w) != EVMPI_OK)
      FAIL("send: recv: %s", evmpi_last_error());
  }
  char a[600], b[100];
  if (expect_timeout(base, w, t0, name, a, sizeof a) != 0)
    FAIL("send: %s (want EVMPI_ERR_TIMEOUT within %d ms)", a, timeout_ms + SLACK_MS);
  evmpi_work_release(w);
  if (destroy_bounded(pg, b, sizeof b) != 0)
    FAIL("send: %s; %s (want within %d ms)", a, b, timeout_ms + SLACK_MS);
  say("PASS send (8 MiB, rank %d's %s): %s; %s", rank, name, a, b);
  return 0;
}

int main(int argc, char **argv) {
  const char *which = argc > 1 ? argv[1] : "";
  dir = getenv("NETFAULT_DIR");
  if (!dir) {
    fprintf(stderr, "netfault: NETFAULT_DIR is not set (tools/multihost-faults runs this)\n");
    return 2;
  }
  if (getenv("NETFAULT_TIMEOUT_MS"))
    timeout_ms = atoi(getenv("NETFAULT_TIMEOUT_MS"));
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = NULL;
  if (evmpi_pg_create(base, NULL, 0, &pg) != EVMPI_OK) {
    fprintf(stderr, "netfault: pg_create: %s\n", evmpi_last_error());
    return 1;
  }
  rank = evmpi_pg_rank(pg);
  if (evmpi_pg_size(pg) != 2)
    FAIL("netfault runs at 2 ranks, one per host");
  evmpi_pg_set_timeout(pg, timeout_ms);
  /* Warm-up: the ranks' TCP connection is made before the cut. */
  int one = 1;
  evmpi_tensor_t t1 = evmpi_tensor_flat(&one, EVMPI_INT32, 1);
  evmpi_work_t *w;
  if (evmpi_allreduce(pg, &t1, EVMPI_SUM, &w) != EVMPI_OK || run_until_done(base, w, 20000) < 0 ||
      evmpi_work_status(w) != EVMPI_OK || one != 2)
    FAIL("warm-up allreduce failed: %s", evmpi_last_error());
  evmpi_work_release(w);
  int rc;
  if (strcmp(which, "coll") == 0)
    rc = case_coll(base, pg, false);
  else if (strcmp(which, "flap") == 0)
    rc = case_coll(base, pg, true);
  else if (strcmp(which, "recv") == 0)
    rc = case_recv(base, pg);
  else if (strcmp(which, "send") == 0)
    rc = case_send(base, pg);
  else {
    fprintf(stderr, "usage: netfault coll|recv|send|flap\n");
    return 2;
  }
  /* NETFAULT_ABORT=1 (the MPICH runs): end the job with MPI_Abort, as an
   * application under MPICH's Hydra must once a timeout broke a group:
   * Hydra ends a job only when every host's proxy has hung up or been
   * told to end, and no exit status of a rank tells the proxy across the
   * dead link (doc/multihost.md). */
  const char *abort_env = getenv("NETFAULT_ABORT");
  if (abort_env && atoi(abort_env) == 1) {
    /* The abort ends the other rank too, maybe before it has its verdict
     * (flap: its new group's allreduce may finish a moment after ours):
     * its verdict file first (FILE_WAIT_MS at most). */
    char peer[32];
    snprintf(peer, sizeof peer, "rank.%d", 1 - rank);
    (void)wait_file(peer);
    MPI_Abort(MPI_COMM_WORLD, rc ? rc : 3);
  }
  /* Leave the base alive: a broken group's late completion may still be
   * posted to it until MPI goes. Returning from main: evmpi's exit path
   * (lib/mpi_env.c) must end the process, link up or down. */
  return rc;
}
