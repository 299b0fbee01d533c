/* bench_idle.c: what waiting costs. Mode idle.
 *
 * For each case rank 0 waits in its libevent loop (blocked in epoll, a
 * timer ends the window) while something of evmpi's is, or is not,
 * pending; the CPU the whole process used over the window (getrusage,
 * user + system, every thread) is reported as a percentage of one core.
 * The window opens --settle-ms after the case began (default 5 ms), so
 * what is measured is the cost of a wait that has already lasted that
 * long, not the first spin.
 *
 *   none    the group alone, nothing pending
 *   recv    an evmpi_recv posted on rank 0; rank 1 sends only after the
 *           window (raw: a pthread blocked in MPI_Recv)
 *   coll    an 8 B evmpi_broadcast posted on rank 0 whose root (rank 1)
 *           posts only after the window (raw: a pthread blocked in
 *           MPI_Bcast)
 *   floor   no evmpi work pending; a bare pthread wakes from a timed
 *           condition-variable wait every EVMPI_P2P_IDLE_POLL_MS (the
 *           group's), as the poller does for a posted receive, and does
 *           nothing else (in the raw column): what that period of
 *           wake-ups costs on this machine before any MPI test
 *   groups  --groups more groups (default 64) alive on the loop, nothing
 *           pending; threads and memory (resident set) per group from
 *           /proc/self
 *
 * recv and coll also report how late the wait ended: rank 1 sends its
 * clock (CLOCK_MONOTONIC, shared by the ranks of one host) when it sends
 * or posts, and rank 0 takes the difference when the callback runs (raw:
 * when the blocked call returns). Medians over --reps repetitions of a
 * window of --idle-ms (default 500 ms) each, raw and evmpi alternating. */
#include "bench.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define TAG_IDLE 4242

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int bench_threads(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d)
    return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

long bench_rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f)
    return -1;
  long size = 0, rss = 0;
  int got = fscanf(f, "%ld %ld", &size, &rss);
  fclose(f);
  return got == 2 ? rss * (sysconf(_SC_PAGESIZE) / 1024) : -1;
}

static void set_flag(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  *(bool *)arg = true;
}

void loop_for(bench_t *b, int64_t ns) {
  bool done = false;
  struct event *ev = evtimer_new(b->base, set_flag, &done);
  if (!ev)
    die("evtimer_new failed");
  struct timeval tv = {(time_t)(ns / 1000000000), (suseconds_t)(ns % 1000000000 / 1000)};
  evtimer_add(ev, &tv);
  loop_until(b, &done);
  event_free(ev);
}

/* The window: rank 0's CPU over window_ns of waiting in the loop, in
 * percent of one core. */
static double cpu_window(bench_t *b, int64_t window_ns) {
  double c0 = cpu_seconds();
  int64_t t0 = now_ns();
  loop_for(b, window_ns);
  double wall = (double)(now_ns() - t0) / 1e9;
  return 100.0 * (cpu_seconds() - c0) / wall;
}

typedef struct {
  int64_t stamp; /* rank 1's clock when it sent or posted */
  int64_t done_ns;
  bool done;
} idle_wait_t;

static void idle_done(evmpi_work_t *w, void *arg) {
  idle_wait_t *iw = arg;
  iw->done_ns = now_ns(); /* first: the time of the delivery */
  release_ok(w);
  iw->done = true;
}

/* ---- raw: a pthread blocked in MPI ------------------------------------------------ */

typedef struct {
  int which; /* 1 recv, 2 coll */
  MPI_Comm comm;
  idle_wait_t *iw;
} raw_wait_t;

static void *raw_waiter(void *arg) {
  raw_wait_t *r = arg;
  if (r->which == 1)
    MPI_Recv(&r->iw->stamp, 8, MPI_BYTE, 1, TAG_IDLE, r->comm, MPI_STATUS_IGNORE);
  else
    MPI_Bcast(&r->iw->stamp, 8, MPI_BYTE, 1, r->comm);
  r->iw->done_ns = now_ns();
  return NULL;
}

typedef struct {
  double cpu, late_us;
} idle_sample_t;

/* ---- floor: a bare thread with the poller's period ------------------------------- */

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool stop;
  int64_t period_ns;
} ticker_t;

static void *ticker_main(void *arg) {
  ticker_t *t = arg;
  pthread_mutex_lock(&t->mu);
  while (!t->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t at = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + t->period_ns;
    ts.tv_sec = (time_t)(at / 1000000000);
    ts.tv_nsec = (long)(at % 1000000000);
    pthread_cond_timedwait(&t->cv, &t->mu, &ts);
  }
  pthread_mutex_unlock(&t->mu);
  return NULL;
}

/* Rank 0's CPU over the window with a ticker of period_ns running. */
static double floor_round(bench_t *b, int64_t period_ns, int64_t settle_ns, int64_t window_ns) {
  idle_barrier(b);
  if (b->rank != 0)
    return NAN;
  ticker_t t = {.period_ns = period_ns};
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&t.mu, NULL);
  pthread_cond_init(&t.cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_t th;
  if (pthread_create(&th, NULL, ticker_main, &t) != 0)
    die("pthread_create failed");
  loop_for(b, settle_ns);
  double cpu = cpu_window(b, window_ns);
  pthread_mutex_lock(&t.mu);
  t.stop = true;
  pthread_cond_signal(&t.cv);
  pthread_mutex_unlock(&t.mu);
  pthread_join(th, NULL);
  pthread_mutex_destroy(&t.mu);
  pthread_cond_destroy(&t.cv);
  return cpu;
}

/* One repetition of case which (1 recv, 2 coll), raw or evmpi. */
static idle_sample_t idle_round(bench_t *b, MPI_Comm raw_comm, int which, bool raw,
                                int64_t settle_ns, int64_t window_ns) {
  idle_sample_t s = {NAN, NAN};
  idle_wait_t iw = {0};
  evmpi_tensor_t t = evmpi_tensor_flat(&iw.stamp, EVMPI_UINT8, 8);
  evmpi_work_t *w;
  idle_barrier(b);
  bool waiter = which == 2 ? b->rank != 1 : b->rank == 0;
  bool late = b->rank == 1;
  if (waiter) {
    pthread_t th;
    raw_wait_t r = {which, raw_comm, &iw};
    if (raw) {
      if (pthread_create(&th, NULL, raw_waiter, &r) != 0)
        die("pthread_create failed");
    } else {
      if (which == 1)
        check(evmpi_recv(b->pg, &t, 1, TAG_IDLE, &w));
      else
        check(evmpi_broadcast(b->pg, &t, 1, &w));
      check(evmpi_work_on_complete(w, idle_done, &iw));
    }
    loop_for(b, settle_ns);
    if (b->rank == 0)
      s.cpu = cpu_window(b, window_ns);
    else
      loop_for(b, window_ns);
    if (raw)
      pthread_join(th, NULL);
    else
      loop_until(b, &iw.done);
    s.late_us = (double)(iw.done_ns - iw.stamp) / 1e3;
  } else if (late) {
    loop_for(b, settle_ns + window_ns);
    iw.stamp = now_ns();
    if (raw) {
      if (which == 1)
        MPI_Send(&iw.stamp, 8, MPI_BYTE, 0, TAG_IDLE, raw_comm);
      else
        MPI_Bcast(&iw.stamp, 8, MPI_BYTE, 1, raw_comm);
    } else {
      if (which == 1)
        check(evmpi_send(b->pg, &t, 0, TAG_IDLE, &w));
      else
        check(evmpi_broadcast(b->pg, &t, 1, &w));
      check(evmpi_work_on_complete(w, idle_done, &iw));
      loop_until(b, &iw.done);
    }
  }
  return s;
}

void mode_idle(bench_t *b) {
  static const column_t cols[] = {
      {"raw_cpu_pct", "raw CPU (%)"},
      {"evmpi_cpu_pct", "evmpi CPU (%)"},
      {"raw_late_us", "raw late (us)"},
      {"evmpi_late_us", "evmpi late (us)"},
  };
  if (b->size < 2)
    die("idle needs at least 2 ranks");
  int64_t settle = (int64_t)b->o.settle_ms * 1000000, window = (int64_t)b->o.idle_ms * 1000000;
  int reps = b->o.reps;
  out_mode(b, "idle", "CPU while waiting", "% of a core", "case", "Case", 4, cols);
  out_note(b, "%d ranks; rank 0 waits in its loop for %d ms, %d ms after the case began; CPU of "
           "the whole process (getrusage), %% of one core", b->size, b->o.idle_ms,
           b->o.settle_ms);
  out_note(b, "none:   the group alone, nothing pending");
  out_note(b, "recv:   a posted receive whose sender (rank 1) sends after the window "
           "(raw: a pthread in MPI_Recv)");
  out_note(b, "coll:   a posted 8 B broadcast whose root (rank 1) posts after the window "
           "(raw: a pthread in MPI_Bcast)");
  char poll_ms[32];
  check(evmpi_pg_get_setting(b->pg, "EVMPI_P2P_IDLE_POLL_MS", poll_ms, sizeof poll_ms));
  int64_t period = (int64_t)atoll(poll_ms) * 1000000;
  out_note(b, "floor:  a bare pthread waking from a timed wait every %s ms "
           "(EVMPI_P2P_IDLE_POLL_MS), no MPI (raw column)", poll_ms);
  out_note(b, "groups: %d more groups alive, nothing pending", b->o.groups);
  out_note(b, "late:   from the sender's or root's post to rank 0's completion (one host's "
           "clock); medians of %d repetitions", reps);
  out_header(b);
  MPI_Comm raw_comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &raw_comm);
  double *v[4];
  for (int k = 0; k < 4; k++)
    v[k] = xcalloc((size_t)reps, sizeof **v);
  char summary[512] = "", part[160];

  /* none */
  for (int r = 0; r < reps; r++) {
    idle_barrier(b);
    loop_for(b, settle);
    v[1][r] = cpu_window(b, window);
  }
  double none[4] = {NAN, median(v[1], reps), NAN, NAN};
  out_row_name(b, "none", none, NULL);
  snprintf(part, sizeof part, "\"none_pct\": %s", jnum(none[1]));
  strcat(summary, part);

  static const char *names[3] = {NULL, "recv", "coll"};
  for (int which = 1; which <= 2; which++) {
    idle_round(b, raw_comm, which, false, settle / 10 + 1, window / 10 + 1); /* warm-up */
    for (int r = 0; r < reps; r++) {
      idle_sample_t rs = idle_round(b, raw_comm, which, true, settle, window);
      idle_sample_t es = idle_round(b, raw_comm, which, false, settle, window);
      v[0][r] = rs.cpu;
      v[1][r] = es.cpu;
      v[2][r] = rs.late_us;
      v[3][r] = es.late_us;
    }
    double vals[4];
    for (int k = 0; k < 4; k++)
      vals[k] = median(v[k], reps);
    out_row_name(b, names[which], vals, NULL);
    snprintf(part, sizeof part, ", \"%s_pct\": %s, \"%s_late_us\": %s", names[which],
             jnum(vals[1]), names[which], jnum(vals[3]));
    strcat(summary, part);
  }

  /* floor */
  for (int r = 0; r < reps; r++)
    v[0][r] = floor_round(b, period, settle, window);
  double fl[4] = {median(v[0], reps), NAN, NAN, NAN};
  out_row_name(b, "floor", fl, NULL);
  snprintf(part, sizeof part, ", \"floor_pct\": %s", jnum(fl[0]));
  strcat(summary, part);

  /* groups */
  int ng = b->o.groups;
  evmpi_pg_t **g = xcalloc((size_t)ng, sizeof *g);
  idle_barrier(b);
  int th0 = bench_threads();
  long rss0 = bench_rss_kib();
  for (int i = 0; i < ng; i++)
    check(evmpi_pg_create(b->base, NULL, 0, &g[i]));
  int th1 = bench_threads();
  long rss1 = bench_rss_kib();
  for (int r = 0; r < reps; r++) {
    idle_barrier(b);
    loop_for(b, settle);
    v[1][r] = cpu_window(b, window);
  }
  double per_thr = ng ? (double)(th1 - th0) / ng : NAN;
  double per_kib = ng ? (double)(rss1 - rss0) / ng : NAN;
  double gv[4] = {NAN, median(v[1], reps), NAN, NAN};
  char extra[160];
  snprintf(extra, sizeof extra, "\"groups\": %d, \"threads_per_group\": %s, "
           "\"rss_kib_per_group\": %s", ng, jnum(per_thr), jnum(per_kib));
  out_row_name(b, "groups", gv, extra);
  snprintf(part, sizeof part, ", \"groups\": %d, \"groups_pct\": %s, \"threads_per_group\": %s, "
           "\"rss_kib_per_group\": %s", ng, jnum(gv[1]), jnum(per_thr), jnum(per_kib));
  strcat(summary, part);
  for (int i = 0; i < ng; i++)
    evmpi_pg_destroy(g[i]);
  free(g);
  char text[200];
  snprintf(text, sizeof text, "groups: %.2f threads and %.0f KiB resident (rank 0) per group",
           per_thr, per_kib);
  idle_barrier(b);
  out_mode_end(b, summary, text);
  for (int k = 0; k < 4; k++)
    free(v[k]);
  MPI_Comm_free(&raw_comm);
}
