/* bench_loop.c: what evmpi does to the application's loop.
 *
 * responsiveness: a persistent 1 ms timer on the loop (the base has
 * EVENT_BASE_FLAG_PRECISE_TIMER); its lateness (when the callback runs,
 * against when libevent scheduled it: the previous schedule plus the
 * period, or now plus the period once a whole period was missed) while
 * --colls allreduces of --coll-bytes (64 MiB) run back to back, queued at
 * once through evmpi; next to the same timer while a bare pthread runs the
 * same MPI_Allreduce calls on a duplicate of MPI_COMM_WORLD (the baseline:
 * the share of the cores the OS gives the loop next to a thread busy in
 * MPI), and with nothing running (for as long as an evmpi round, at most
 * 1 s). Each rank measures its own loop; the table gives the worst rank's
 * figures. This mode runs on a base of its own, with a group of its own:
 * the precise timer costs a timerfd_settime call per loop wakeup, which
 * the other modes should not pay.
 *
 * wakeups: completions delivered per loop wakeup. The loop runs in
 * event_base_loop(EVLOOP_ONCE) steps; a wakeup is a step in which at least
 * one completion callback ran. */
#include "bench.h"

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ---- responsiveness ------------------------------------------------------------------- */

typedef struct {
  int64_t period, sched;
  samples_t *lat;
} tick_t;

static void on_tick(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  tick_t *t = arg;
  int64_t now = now_ns();
  push(t->lat, (double)(now - t->sched) / 1e3);
  /* libevent's rule for a persistent timer (event_persist_closure). */
  t->sched += t->period;
  if (t->sched < now)
    t->sched = now + t->period;
}

typedef struct {
  MPI_Comm comm;
  float *buf;
  int count, colls;
  int efd;
} rthread_t;

static void *resp_thread_main(void *arg) {
  rthread_t *r = arg;
  for (int i = 0; i < r->colls; i++)
    MPI_Allreduce(MPI_IN_PLACE, r->buf, r->count, MPI_FLOAT, MPI_SUM, r->comm);
  uint64_t one = 1;
  if (write(r->efd, &one, sizeof one) < 0)
    die("eventfd write failed");
  return NULL;
}


static void on_thread_done(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  uint64_t v;
  if (read(fd, &v, sizeof v) < 0)
    die("eventfd read failed");
  *(bool *)arg = true;
}

static void on_idle_done(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  *(bool *)arg = true;
}

/* case 0: idle (for the time the last evmpi round took), 1: thread, 2: evmpi. */
static void resp_round(bench_t *b, int which, rthread_t *r, evmpi_tensor_t *t, samples_t *lat,
                       int64_t *idle_ns) {
  tick_t tick = {(int64_t)b->o.timer_us * 1000, 0, lat};
  struct event *timer = event_new(b->base, -1, EV_PERSIST, on_tick, &tick);
  struct timeval tv = {b->o.timer_us / 1000000, b->o.timer_us % 1000000};
  bool done = false;
  struct event *extra = NULL;
  MPI_Barrier(MPI_COMM_WORLD);
  int64_t t0 = now_ns();
  tick.sched = t0 + tick.period;
  event_add(timer, &tv);
  pthread_t th;
  countdown_t cd = {r->colls, false};
  if (which == 0) {
    struct timeval d = {(time_t)(*idle_ns / 1000000000), (suseconds_t)(*idle_ns % 1000000000 / 1000)};
    extra = event_new(b->base, -1, 0, on_idle_done, &done);
    event_add(extra, &d);
    loop_until(b, &done);
  } else if (which == 1) {
    extra = event_new(b->base, r->efd, EV_READ, on_thread_done, &done);
    event_add(extra, NULL);
    if (pthread_create(&th, NULL, resp_thread_main, r) != 0)
      die("pthread_create failed");
    loop_until(b, &done);
    pthread_join(th, NULL);
  } else {
    for (int i = 0; i < r->colls; i++) {
      evmpi_work_t *w;
      check(evmpi_allreduce(b->pg, t, EVMPI_SUM, &w));
      check(evmpi_work_on_complete(w, count_done, &cd));
    }
    loop_until(b, &cd.done);
    *idle_ns = now_ns() - t0;
    if (*idle_ns > 1000000000)
      *idle_ns = 1000000000; /* the idle case: at most a second */
  }
  event_free(timer);
  if (extra)
    event_free(extra);
}

/* Per-rank p50, p99, max of s, then the largest of each over the ranks. */
static void worst_rank(samples_t *s, double out[4]) {
  double mine[3] = {median(s->v, s->n), percentile(s->v, s->n, 99), vmax(s->v, s->n)};
  MPI_Allreduce(mine, out, 3, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  int n = s->n, nmin;
  MPI_Allreduce(&n, &nmin, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  out[3] = nmin;
}

void mode_responsiveness(bench_t *b) {
  static const column_t cols[] = {
      {"p50_us", "p50 late (us)"},
      {"p99_us", "p99 late (us)"},
      {"max_us", "max late (us)"},
      {"samples", "samples"},
  };
  size_t cbytes = b->o.coll_bytes ? b->o.coll_bytes : 64u << 20;
  int colls = b->o.colls ? b->o.colls : 4;
  if (cbytes / 4 > INT_MAX)
    die("--coll-bytes: too large");
  /* This mode's own loop, with precise timers, and a group on it. */
  struct event_base *plain = b->base;
  evmpi_pg_t *plain_pg = b->pg;
  struct event_config *cfg = event_config_new();
  event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
  b->base = event_base_new_with_config(cfg);
  event_config_free(cfg);
  if (!b->base)
    die("event_base_new_with_config failed");
  check(evmpi_pg_create(b->base, NULL, 0, &b->pg));
  rthread_t r = {.buf = bench_alloc(cbytes), .count = (int)(cbytes / 4), .colls = colls};
  MPI_Comm_dup(MPI_COMM_WORLD, &r.comm);
  r.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (r.efd < 0)
    die("eventfd failed");
  evmpi_tensor_t t = evmpi_tensor_flat(r.buf, EVMPI_FLOAT32, r.count);
  samples_t lat[3] = {{0}};
  int64_t idle_ns = 0;

  out_mode(b, "responsiveness", "Loop responsiveness", "us", "case", "Case", 4, cols);
  out_note(b, "%d ranks; a persistent %d us timer on the loop (EVENT_BASE_FLAG_PRECISE_TIMER); "
           "lateness against its schedule", b->size, b->o.timer_us);
  out_note(b, "while %d back-to-back %zu B allreduces run: evmpi (queued at once) or a bare "
           "pthread (MPI_Allreduce on a dup of MPI_COMM_WORLD)", colls, cbytes);
  out_note(b, "%d repetitions pooled; each figure is the worst rank's", b->o.reps);
  out_header(b);
  resp_round(b, 2, &r, &t, &lat[2], &idle_ns); /* warm-up */
  for (int i = 0; i < 3; i++)
    lat[i].n = 0;
  for (int rep = 0; rep < b->o.reps; rep++) {
    resp_round(b, 1, &r, &t, &lat[1], &idle_ns);
    resp_round(b, 2, &r, &t, &lat[2], &idle_ns);
    resp_round(b, 0, &r, &t, &lat[0], &idle_ns);
  }
  static const char *names[3] = {"idle", "thread", "evmpi"};
  static const char *what[3] = {"no MPI running", "bare pthread in MPI_Allreduce",
                                "evmpi allreduces"};
  double v[3][4];
  for (int i = 0; i < 3; i++) {
    worst_rank(&lat[i], v[i]);
    char extra[96];
    snprintf(extra, sizeof extra, "\"what\": \"%s\"", what[i]);
    out_row_name(b, names[i], v[i], extra);
  }
  double excess = (v[2][2] - v[1][2]) / 1e3;
  char summary[256], text[256];
  snprintf(summary, sizeof summary,
           "\"coll_bytes\": %zu, \"timer_us\": %d, \"evmpi_max_us\": %s, \"thread_max_us\": "
           "%s, \"excess_ms\": %s",
           cbytes, b->o.timer_us, jnum(v[2][2]), jnum(v[1][2]), jnum(excess));
  snprintf(text, sizeof text, "evmpi's worst lateness is %.2f ms %s the bare thread's", 
           excess < 0 ? -excess : excess, excess < 0 ? "below" : "above");
  out_mode_end(b, summary, text);
  for (int i = 0; i < 3; i++)
    free(lat[i].v);
  close(r.efd);
  MPI_Comm_free(&r.comm);
  free(r.buf);
  evmpi_pg_destroy(b->pg);
  event_base_free(b->base);
  b->base = plain;
  b->pg = plain_pg;
}

/* ---- wakeups --------------------------------------------------------------------------- */

typedef struct {
  bench_t *b;
  evmpi_tensor_t t;
  long delivered; /* callbacks run */
  int left;
  bool chain;
  bool done;
} wk_t;

static void wk_submit(wk_t *k);

static void wk_cb(evmpi_work_t *w, void *arg) {
  wk_t *k = arg;
  release_ok(w);
  k->delivered++;
  if (--k->left == 0)
    k->done = true;
  else if (k->chain)
    wk_submit(k);
}

static void wk_submit(wk_t *k) {
  evmpi_work_t *w;
  check(evmpi_allreduce(k->b->pg, &k->t, EVMPI_SUM, &w));
  check(evmpi_work_on_complete(w, wk_cb, k));
}

typedef struct {
  long completions, wakeups, steps, max_batch;
  double us;
} wk_count_t;

static void wk_loop(wk_t *k, int64_t t0, wk_count_t *c) {
  while (!k->done) {
    long before = k->delivered;
    if (event_base_loop(k->b->base, EVLOOP_ONCE) < 0)
      die("event_base_loop failed");
    long got = k->delivered - before;
    c->steps++;
    if (got > 0) {
      c->wakeups++;
      if (got > c->max_batch)
        c->max_batch = got;
    }
  }
  c->us = (double)(now_ns() - t0) / 1e3;
  c->completions = k->delivered;
}

/* case 0: chain of n allreduces; 1: n allreduces queued at once; 2: ranks 0
 * and 1 each post n receives, then send n messages to the other. */
static void wk_round(bench_t *b, int which, int n, float *buf, char *rbuf, wk_count_t *c) {
  wk_t k = {.b = b, .chain = which == 0};
  memset(c, 0, sizeof *c);
  if (which < 2) {
    k.t = evmpi_tensor_flat(buf, EVMPI_FLOAT32, (int64_t)(b->o.msg_bytes / 4));
    k.left = n;
    MPI_Barrier(MPI_COMM_WORLD);
    int64_t t0 = now_ns();
    for (int i = 0; i < (which == 0 ? 1 : n); i++)
      wk_submit(&k);
    wk_loop(&k, t0, c);
    return;
  }
  idle_barrier(b);
  if (b->rank > 1)
    return;
  int peer = 1 - b->rank;
  k.left = 2 * n;
  evmpi_tensor_t *tr = xcalloc((size_t)n, sizeof *tr);
  static char sbuf[8];
  evmpi_tensor_t ts = evmpi_tensor_flat(sbuf, EVMPI_UINT8, 8);
  for (int i = 0; i < n; i++) {
    tr[i] = evmpi_tensor_flat(rbuf + (size_t)i * 8, EVMPI_UINT8, 8);
    post_recv(b, &tr[i], peer, 13, wk_cb, &k);
  }
  MPI_Barrier(b->pair);
  int64_t t0 = now_ns();
  for (int i = 0; i < n; i++)
    post_send(b, &ts, peer, 13, wk_cb, &k);
  wk_loop(&k, t0, c);
  free(tr);
}

void mode_wakeups(bench_t *b) {
  static const column_t cols[] = {
      {"completions", "completions"},
      {"wakeups", "wakeups"},
      {"per_wakeup", "per wakeup"},
      {"max_batch", "max batch"},
  };
  int n = b->o.nops;
  int np2p = n / 10 > 0 ? n / 10 : 1;
  size_t bytes = b->o.msg_bytes - b->o.msg_bytes % 4;
  if (bytes < 4 || bytes / 4 > INT_MAX)
    die("--msg: out of range for float32 elements");
  float *buf = bench_alloc(bytes);
  char *rbuf = bench_alloc((size_t)np2p * 8);
  out_mode(b, "wakeups", "Completions per loop wakeup", "completions", "case", "Case", 4, cols);
  out_note(b, "%d ranks; the loop runs in event_base_loop(EVLOOP_ONCE) steps; a wakeup is a step "
           "that ran at least one completion callback (rank 0)", b->size);
  out_note(b, "chain:  %d %zu B allreduces, each submitted by the previous one's callback", n / 10,
           bytes);
  out_note(b, "queued: %d %zu B allreduces submitted at once", n, bytes);
  out_note(b, "p2p:    ranks 0 and 1 post %d 8 B receives each, then send %d to each other "
           "(sends and receives counted)", np2p, np2p);
  out_note(b, "median of %d repetitions", b->o.reps);
  out_header(b);
  static const char *names[3] = {"chain", "queued", "p2p"};
  int counts[3] = {n / 10 > 0 ? n / 10 : 1, n, np2p};
  wk_count_t *c = xcalloc((size_t)b->o.reps, sizeof *c);
  double *per = xcalloc((size_t)b->o.reps, sizeof *per);
  for (int which = 0; which < 3; which++) {
    if (which == 2 && b->size < 2)
      continue;
    wk_count_t warm;
    wk_round(b, which, counts[which] / 10 + 1, buf, rbuf, &warm);
    for (int r = 0; r < b->o.reps; r++) {
      wk_round(b, which, counts[which], buf, rbuf, &c[r]);
      per[r] = c[r].wakeups ? (double)c[r].completions / (double)c[r].wakeups : 0;
    }
    /* The repetition with the median completions per wakeup. */
    double med = median(per, b->o.reps);
    int at = 0;
    for (int r = 1; r < b->o.reps; r++) {
      double pr = c[r].wakeups ? (double)c[r].completions / (double)c[r].wakeups : 0;
      double pa = c[at].wakeups ? (double)c[at].completions / (double)c[at].wakeups : 0;
      if (fabs(pr - med) < fabs(pa - med))
        at = r;
    }
    wk_count_t *m = &c[at];
    double vals[4] = {(double)m->completions, (double)m->wakeups, med, (double)m->max_batch};
    char extra[160];
    snprintf(extra, sizeof extra, "\"ops\": %d, \"loop_steps\": %ld, \"us\": %.1f",
             counts[which], m->steps, m->us);
    out_row_name(b, names[which], vals, extra);
  }
  idle_barrier(b);
  out_mode_end(b, NULL, NULL);
  free(per);
  free(c);
  free(buf);
  free(rbuf);
}
