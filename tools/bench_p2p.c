/* bench_p2p.c: point to point between ranks 0 and 1, raw MPI against evmpi.
 *
 * pingpong: half round trip. Raw: MPI_Send/MPI_Recv back and forth. evmpi:
 * rank 0 posts the receive for the reply and sends; rank 1's receive
 * callback posts its next receive and sends the reply; rank 0's receive
 * callback starts the next round. Sends are released at once (nobody
 * waits for their callbacks, as an application that does not care when a
 * send completes would do).
 *
 * msgrate: rank 0 sends windows of W messages, rank 1 receives them and
 * acknowledges each window with one message; messages per second. Raw:
 * MPI_Isend x W, MPI_Waitall, MPI_Recv (ack). evmpi: W sends and the ack's
 * receive, each with a callback; the window ends when all W+1 have run.
 * The receiver posts the next window's receives before it acknowledges.
 * minimal: the same callbacks with nothing but MPI, a ceiling for any
 * library that hands each completion to a callback: every request goes
 * into an array with its callback (and a clock read, as a work's record
 * takes), one MPI_Testsome loop on the main thread runs the callbacks of
 * what completed. No work objects, threads, deadlines or ordering.
 *
 * overlap (p2p during a collective): every rank runs back-to-back
 * allreduces of --coll-bytes on the group while ranks 0 and 1 ping-pong
 * 8 B on the same group. Each round trip is timed; those that start and
 * end while rank 0's worker runs the collectives are reported, next to the
 * collectives' own durations. A receive held back until the collective
 * ends would allow about one round trip per collective; the summary's
 * held_back is true below two. The raw baseline does the same with a
 * pthread running MPI_Allreduce on a duplicate of MPI_COMM_WORLD while the
 * main thread ping-pongs with MPI_Send/MPI_Recv.
 *
 * Ranks above 1 sit out the point-to-point parts in idle_barrier (in the
 * libevent loop, not spinning in MPI). */
#include "bench.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TAG_PING = 11, TAG_ACK = 12 };

static void pair_barrier(bench_t *b) { MPI_Barrier(b->pair); }

/* ---- pingpong ------------------------------------------------------------------------- */

typedef struct {
  bench_t *b;
  evmpi_tensor_t ts, tr;
  int left;
  bool done;
} pp_t;

static double pp_raw(bench_t *b, char *sbuf, char *rbuf, int n, int iters) {
  pair_barrier(b);
  int64_t t0 = now_ns();
  for (int i = 0; i < iters; i++) {
    if (b->rank == 0) {
      MPI_Send(sbuf, n, MPI_BYTE, 1, TAG_PING, MPI_COMM_WORLD);
      MPI_Recv(rbuf, n, MPI_BYTE, 1, TAG_PING, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else {
      MPI_Recv(rbuf, n, MPI_BYTE, 0, TAG_PING, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(sbuf, n, MPI_BYTE, 0, TAG_PING, MPI_COMM_WORLD);
    }
  }
  return (double)(now_ns() - t0) / 1e3 / (2.0 * iters);
}

static void send_released(bench_t *b, evmpi_tensor_t *t, int dst, int tag) {
  evmpi_work_t *s;
  check(evmpi_send(b->pg, t, dst, tag, &s));
  evmpi_work_release(s);
}

static void pp0_ping(pp_t *p);

static void pp0_pong(evmpi_work_t *w, void *arg) {
  pp_t *p = arg;
  release_ok(w);
  if (--p->left > 0)
    pp0_ping(p);
  else
    p->done = true;
}

static void pp0_ping(pp_t *p) {
  post_recv(p->b, &p->tr, 1, TAG_PING, pp0_pong, p);
  send_released(p->b, &p->ts, 1, TAG_PING);
}

static void pp1_post(pp_t *p);

static void pp1_ping(evmpi_work_t *w, void *arg) {
  pp_t *p = arg;
  release_ok(w);
  if (--p->left > 0)
    pp1_post(p);
  else
    p->done = true;
  send_released(p->b, &p->ts, 0, TAG_PING);
}

static void pp1_post(pp_t *p) { post_recv(p->b, &p->tr, 0, TAG_PING, pp1_ping, p); }

static double pp_evmpi(bench_t *b, char *sbuf, char *rbuf, int n, int iters) {
  pp_t p = {b, evmpi_tensor_flat(sbuf, EVMPI_UINT8, n), evmpi_tensor_flat(rbuf, EVMPI_UINT8, n),
            iters, false};
  if (b->rank == 1)
    pp1_post(&p); /* before the barrier: the first ping finds it posted */
  pair_barrier(b);
  int64_t t0 = now_ns();
  if (b->rank == 0)
    pp0_ping(&p);
  loop_until(b, &p.done);
  return (double)(now_ns() - t0) / 1e3 / (2.0 * iters);
}

/* latency_row's sides: ranks 0 and 1 ping-pong, the others wait in the
 * loop (idle_barrier, before each raw repetition and so before each pair
 * of them) and report nothing: rank 0 prints its own times. */
typedef struct {
  bench_t *b;
  char *sbuf, *rbuf;
  int n;
} pp_row_t;

static double pp_row_raw(void *ctx, int iters) {
  pp_row_t *c = ctx;
  idle_barrier(c->b);
  return c->b->rank < 2 ? pp_raw(c->b, c->sbuf, c->rbuf, c->n, iters) : 0;
}

static double pp_row_ev(void *ctx, int iters) {
  pp_row_t *c = ctx;
  return c->b->rank < 2 ? pp_evmpi(c->b, c->sbuf, c->rbuf, c->n, iters) : 0;
}

void mode_pingpong(bench_t *b) {
  out_mode(b, "pingpong", "Ping-pong latency", "us", "bytes", "Size", 4, latency_cols);
  if (b->size < 2) {
    out_note(b, "needs 2 ranks: skipped");
    out_mode_end(b, NULL, NULL);
    return;
  }
  size_t lo = sweep_min(b, 1), hi = sweep_max(b, 64u << 20);
  if (hi > INT_MAX)
    die("--max: more bytes than an int counts");
  pp_row_t c = {b, bench_alloc(hi), bench_alloc(hi), 0};
  out_note(b, "ranks 0 and 1 of %d; raw: MPI_Send/MPI_Recv; evmpi: evmpi_send/evmpi_recv, the "
           "receive callback sends the next message", b->size);
  out_note(b, "median of %d repetitions (rank 0's time), us per half round trip", b->o.reps);
  out_header(b);
  for (size_t bytes = lo; bytes <= hi; bytes *= 2) {
    c.n = (int)bytes;
    latency_row(b, bytes, iters_for(b, bytes), pp_row_raw, pp_row_ev, &c);
  }
  idle_barrier(b);
  out_mode_end(b, NULL, NULL);
  free(c.sbuf);
  free(c.rbuf);
}

/* ---- msgrate -------------------------------------------------------------------------- */

void msgrate_init(msgrate_t *m, bench_t *b, size_t max_bytes) {
  *m = (msgrate_t){.b = b, .window = b->o.window};
  m->sbuf = bench_alloc(max_bytes);
  m->rbuf = bench_alloc(max_bytes * (size_t)m->window);
  m->ts = xcalloc((size_t)m->window, sizeof *m->ts);
  m->tack = evmpi_tensor_flat(&m->ack, EVMPI_UINT8, 1);
  m->req = xcalloc((size_t)m->window, sizeof *m->req);
  m->st = xcalloc((size_t)m->window, sizeof *m->st);
  size_t slots = (size_t)m->window + 2; /* a window, the ack, an ack send */
  m->mreq = xcalloc(slots, sizeof *m->mreq);
  m->mcb = xcalloc(slots, sizeof *m->mcb);
  m->midx = xcalloc(slots, sizeof *m->midx);
  m->mst = xcalloc(slots, sizeof *m->mst);
}

void msgrate_size(msgrate_t *m, int n) {
  m->n = n;
  if (m->b->rank == 0)
    m->ts[0] = evmpi_tensor_flat(m->sbuf, EVMPI_UINT8, n);
  else
    for (int i = 0; i < m->window; i++)
      m->ts[i] = evmpi_tensor_flat(m->rbuf + (size_t)i * (size_t)n, EVMPI_UINT8, n);
}

void msgrate_free(msgrate_t *m) {
  free(m->ts);
  free(m->sbuf);
  free(m->rbuf);
  free(m->req);
  free(m->st);
  free(m->mreq);
  free(m->mcb);
  free(m->midx);
  free(m->mst);
}

static void mr_post_raw(msgrate_t *m, MPI_Comm comm) {
  for (int i = 0; i < m->window; i++)
    MPI_Irecv(m->rbuf + (size_t)i * m->n, m->n, MPI_BYTE, 0, TAG_PING, comm, &m->req[i]);
}

double msgrate_raw(msgrate_t *m, MPI_Comm comm) {
  bench_t *b = m->b;
  int w = m->window;
  if (b->rank == 1)
    mr_post_raw(m, comm);
  pair_barrier(b);
  int64_t t0 = now_ns();
  /* Real statuses, not MPI_STATUSES_IGNORE: MPICH declares the argument an
   * array, and gcc's -Wstringop-overflow reads the constant as one of
   * size 0. */
  for (int k = 0; k < m->windows; k++) {
    if (b->rank == 0) {
      for (int i = 0; i < w; i++)
        MPI_Isend(m->sbuf, m->n, MPI_BYTE, 1, TAG_PING, comm, &m->req[i]);
      MPI_Waitall(w, m->req, m->st);
      MPI_Recv(&m->ack, 1, MPI_BYTE, 1, TAG_ACK, comm, MPI_STATUS_IGNORE);
    } else {
      MPI_Waitall(w, m->req, m->st);
      if (k + 1 < m->windows)
        mr_post_raw(m, comm);
      MPI_Send(&m->ack, 1, MPI_BYTE, 0, TAG_ACK, comm);
    }
  }
  double t = (double)(now_ns() - t0) / 1e9;
  return (double)w * m->windows / t;
}

static void mr_send_window(msgrate_t *m);
static void mr_post_window(msgrate_t *m);

/* Counts one callback of the window; the last one starts the next window
 * with next, or ends the run. Returns true when the window ended. */
static bool mr_window_step(msgrate_t *m, evmpi_work_t *w, void (*next)(msgrate_t *m)) {
  release_ok(w);
  if (--m->left > 0)
    return false;
  if (--m->windows_left > 0)
    next(m);
  else
    m->done = true;
  return true;
}

static void mr_sender_cb(evmpi_work_t *w, void *arg) { mr_window_step(arg, w, mr_send_window); }

static void mr_send_window(msgrate_t *m) {
  m->left = m->window + 1;
  post_recv(m->b, &m->tack, 1, TAG_ACK, mr_sender_cb, m);
  for (int i = 0; i < m->window; i++)
    post_send(m->b, &m->ts[0], 1, TAG_PING, mr_sender_cb, m);
}

static void mr_receiver_cb(evmpi_work_t *w, void *arg) {
  msgrate_t *m = arg;
  if (mr_window_step(m, w, mr_post_window)) /* the next window posted first */
    send_released(m->b, &m->tack, 0, TAG_ACK);
}

static void mr_post_window(msgrate_t *m) {
  m->left = m->window;
  for (int i = 0; i < m->window; i++)
    post_recv(m->b, &m->ts[i], 0, TAG_PING, mr_receiver_cb, m);
}

/* One timed run of windows: rank 1 posts the first window's receives
 * before the barrier, rank 0 sends the first window after it, and loop
 * runs both until the last callback; messages per second. */
static double msgrate_run(msgrate_t *m, void (*post)(msgrate_t *), void (*send)(msgrate_t *),
                          void (*loop)(msgrate_t *)) {
  bench_t *b = m->b;
  m->windows_left = m->windows;
  m->done = false;
  if (b->rank == 1)
    post(m);
  pair_barrier(b);
  int64_t t0 = now_ns();
  if (b->rank == 0)
    send(m);
  loop(m);
  double t = (double)(now_ns() - t0) / 1e9;
  return (double)m->window * m->windows / t;
}

static void mr_loop(msgrate_t *m) { loop_until(m->b, &m->done); }

double msgrate_evmpi(msgrate_t *m) { return msgrate_run(m, mr_post_window, mr_send_window, mr_loop); }

/* ---- msgrate's minimal callback path ---------------------------------------------------- */

static int64_t mini_stamps; /* the clock reads' sum, so that none is optimised away */

static void mini_add(msgrate_t *m, MPI_Request r, void (*cb)(void *m)) {
  m->mreq[m->mn] = r;
  m->mcb[m->mn] = cb;
  m->mn++;
  mini_stamps += now_ns();
}

static void mini_send_window(msgrate_t *m);
static void mini_post_window(msgrate_t *m);

static void mini_sender_cb(void *arg) {
  msgrate_t *m = arg;
  if (--m->left > 0)
    return;
  if (--m->windows_left > 0)
    mini_send_window(m);
  else
    m->done = true;
}

static void mini_send_window(msgrate_t *m) {
  MPI_Request r;
  m->left = m->window + 1;
  MPI_Irecv(&m->ack, 1, MPI_BYTE, 1, TAG_ACK, MPI_COMM_WORLD, &r);
  mini_add(m, r, mini_sender_cb);
  for (int i = 0; i < m->window; i++) {
    MPI_Isend(m->sbuf, m->n, MPI_BYTE, 1, TAG_PING, MPI_COMM_WORLD, &r);
    mini_add(m, r, mini_sender_cb);
  }
}

static void mini_receiver_cb(void *arg) {
  msgrate_t *m = arg;
  if (--m->left > 0)
    return;
  if (--m->windows_left > 0)
    mini_post_window(m); /* the next window posted first */
  else
    m->done = true;
  MPI_Request r;
  MPI_Isend(&m->ack, 1, MPI_BYTE, 0, TAG_ACK, MPI_COMM_WORLD, &r);
  mini_add(m, r, NULL); /* released: tested until done, no callback */
}

static void mini_post_window(msgrate_t *m) {
  MPI_Request r;
  m->left = m->window;
  for (int i = 0; i < m->window; i++) {
    MPI_Irecv(m->rbuf + (size_t)i * (size_t)m->n, m->n, MPI_BYTE, 0, TAG_PING, MPI_COMM_WORLD, &r);
    mini_add(m, r, mini_receiver_cb);
  }
}

/* Tests the pending requests until the run is done and none is left; the
 * callbacks of one test run after the arrays are compacted, in the order
 * MPI_Testsome reported them. */
static void mini_loop(msgrate_t *m) {
  void (**fired)(void *) = xcalloc((size_t)m->window + 2, sizeof *fired);
  while (!m->done || m->mn > 0) {
    int out = 0;
    MPI_Testsome(m->mn, m->mreq, &out, m->midx, m->mst);
    if (out == MPI_UNDEFINED)
      out = 0;
    for (int k = 0; k < out; k++)
      fired[k] = m->mcb[m->midx[k]];
    int j = 0;
    for (int i = 0; i < m->mn; i++)
      if (m->mreq[i] != MPI_REQUEST_NULL) {
        m->mreq[j] = m->mreq[i];
        m->mcb[j] = m->mcb[i];
        j++;
      }
    m->mn = j;
    for (int k = 0; k < out; k++)
      if (fired[k])
        fired[k](m);
  }
  free(fired);
}

static double msgrate_minimal(msgrate_t *m) {
  m->mn = 0;
  return msgrate_run(m, mini_post_window, mini_send_window, mini_loop) + (double)(mini_stamps & 0);
}

void mode_msgrate(bench_t *b) {
  static const column_t cols[] = {
      {"raw_msgs", "raw MPI (msg/s)"},
      {"evmpi_msgs", "evmpi (msg/s)"},
      {"ratio", "evmpi/raw"},
      {"minimal_ratio", "minimal/raw"},
  };
  out_mode(b, "msgrate", "Message rate", "messages/s", "bytes", "Size", 4, cols);
  if (b->size < 2) {
    out_note(b, "needs 2 ranks: skipped");
    out_mode_end(b, NULL, NULL);
    return;
  }
  size_t lo = sweep_min(b, 1), hi = sweep_max(b, 64u << 10);
  if (hi > INT_MAX / 2)
    die("--max: too large for msgrate");
  msgrate_t m;
  msgrate_init(&m, b, hi);
  double *raw = xcalloc((size_t)b->o.reps, sizeof *raw);
  double *ev = xcalloc((size_t)b->o.reps, sizeof *ev);
  double *mini = xcalloc((size_t)b->o.reps, sizeof *mini);
  out_note(b, "ranks 0 -> 1 of %d, windows of %d messages, each window acknowledged by rank 1",
           b->size, m.window);
  out_note(b, "minimal: the same callbacks with nothing but MPI_Isend/MPI_Irecv and one "
           "MPI_Testsome loop (a ceiling for a library that calls back per completion)");
  out_note(b, "median of %d repetitions (rank 0's time), messages per second", b->o.reps);
  out_header(b);
  bool active = b->rank < 2;
  for (size_t bytes = lo; bytes <= hi; bytes *= 2) {
    msgrate_size(&m, (int)bytes);
    int per = iters_for(b, bytes * (size_t)m.window) / 10;
    m.windows = per < 4 ? 4 : per > 100 ? 100 : per;
    idle_barrier(b);
    if (active) {
      int keep = m.windows;
      m.windows = 2;
      msgrate_raw(&m, MPI_COMM_WORLD);
      msgrate_evmpi(&m);
      msgrate_minimal(&m);
      m.windows = keep;
    }
    for (int r = 0; r < b->o.reps; r++) {
      idle_barrier(b);
      if (active) {
        raw[r] = msgrate_raw(&m, MPI_COMM_WORLD);
        ev[r] = msgrate_evmpi(&m);
        mini[r] = msgrate_minimal(&m);
      }
    }
    double mr = median(raw, b->o.reps), me = median(ev, b->o.reps);
    double vals[4] = {mr, me, me / mr, median(mini, b->o.reps) / mr};
    char extra[96];
    snprintf(extra, sizeof extra, "\"window\": %d, \"windows\": %d", m.window, m.windows);
    out_row_size(b, bytes, vals, extra);
  }
  idle_barrier(b);
  out_mode_end(b, NULL, NULL);
  free(raw);
  free(ev);
  free(mini);
  msgrate_free(&m);
}

/* ---- overlap: ping-pong during long collectives -------------------------------------- */

typedef struct {
  bench_t *b;
  /* collectives */
  evmpi_tensor_t tcoll;
  float *cbuf;
  int colls_left;
  int64_t first_start, last_finish;
  samples_t *coll_us; /* per collective, from the work records */
  /* ping-pong */
  bool pingpong, pp_done, stop_sent;
  char sbuf[8], rbuf[8];
  evmpi_tensor_t ts, tr;
  int64_t t_ping;
  int pp_left; /* pp-idle: round trips left (-1: until the collectives end) */
  int64_t *pp_t0, *pp_t1;
  int pp_n, pp_cap;
  bool done;
} ov_t;

static void ov_check_done(ov_t *o) {
  o->done = o->colls_left == 0 && (!o->pingpong || o->pp_done);
}

static void ov_coll_cb(evmpi_work_t *w, void *arg) {
  ov_t *o = arg;
  evmpi_work_record_t rec;
  evmpi_work_get_record(w, &rec);
  if (!o->first_start || rec.started_ns < o->first_start)
    o->first_start = rec.started_ns;
  if (rec.finished_ns > o->last_finish)
    o->last_finish = rec.finished_ns;
  if (o->coll_us)
    push(o->coll_us, (double)(rec.finished_ns - rec.started_ns) / 1e3);
  release_ok(w);
  o->colls_left--;
  ov_check_done(o);
}

static void ov_ping(ov_t *o);

static void ov_pong(evmpi_work_t *w, void *arg) {
  ov_t *o = arg;
  release_ok(w);
  if (o->pp_n == o->pp_cap) {
    o->pp_cap = o->pp_cap ? 2 * o->pp_cap : 4096;
    o->pp_t0 = realloc(o->pp_t0, (size_t)o->pp_cap * sizeof *o->pp_t0);
    o->pp_t1 = realloc(o->pp_t1, (size_t)o->pp_cap * sizeof *o->pp_t1);
    if (!o->pp_t0 || !o->pp_t1)
      die("out of memory");
  }
  o->pp_t0[o->pp_n] = o->t_ping;
  o->pp_t1[o->pp_n] = now_ns();
  o->pp_n++;
  if (o->stop_sent) {
    o->pp_done = true;
    ov_check_done(o);
    return;
  }
  if (o->pp_left > 0)
    o->pp_left--;
  ov_ping(o);
}

static void ov_ping(ov_t *o) {
  /* The last ping (its first byte 1) tells rank 1 to stop. */
  bool stop = o->pp_left == 0 || (o->pp_left < 0 && o->colls_left == 0);
  o->sbuf[0] = stop;
  o->stop_sent = stop;
  o->t_ping = now_ns();
  post_recv(o->b, &o->tr, 1, TAG_PING, ov_pong, o);
  send_released(o->b, &o->ts, 1, TAG_PING);
}

static void ov_echo_post(ov_t *o);

static void ov_echo(evmpi_work_t *w, void *arg) {
  ov_t *o = arg;
  release_ok(w);
  if (o->rbuf[0]) {
    o->pp_done = true;
    ov_check_done(o);
  } else {
    ov_echo_post(o);
  }
  send_released(o->b, &o->ts, 0, TAG_PING);
}

static void ov_echo_post(ov_t *o) { post_recv(o->b, &o->tr, 0, TAG_PING, ov_echo, o); }

/* One evmpi round: colls collectives (0: none) and, if pingpong, ranks 0
 * and 1 ping-pong (idle_rts round trips when colls is 0, else until the
 * collectives end on rank 0). Appends the half round trips that fell
 * within the collectives (all of them without collectives) to pp, and the
 * collectives' durations to coll. */
static void ov_round(bench_t *b, ov_t *o, int colls, bool pingpong, int idle_rts,
                     samples_t *pp, samples_t *coll) {
  o->colls_left = colls;
  o->pingpong = pingpong && b->rank < 2;
  o->pp_done = o->stop_sent = false;
  o->pp_left = colls ? -1 : idle_rts;
  o->pp_n = 0;
  o->first_start = o->last_finish = 0;
  o->coll_us = coll;
  o->done = false;
  o->sbuf[0] = o->rbuf[0] = 0;
  if (o->pingpong && b->rank == 1)
    ov_echo_post(o);
  idle_barrier(b);
  for (int i = 0; i < colls; i++) {
    evmpi_work_t *w;
    check(evmpi_allreduce(b->pg, &o->tcoll, EVMPI_SUM, &w));
    check(evmpi_work_on_complete(w, ov_coll_cb, o));
  }
  if (o->pingpong && b->rank == 0)
    ov_ping(o);
  ov_check_done(o);
  loop_until(b, &o->done);
  if (b->rank == 0 && pp)
    for (int i = 0; i < o->pp_n; i++)
      if (!colls || (o->pp_t0[i] >= o->first_start && o->pp_t1[i] <= o->last_finish))
        push(pp, (double)(o->pp_t1[i] - o->pp_t0[i]) / 2e3);
}

/* The raw baseline: a pthread runs the collectives on a duplicate of
 * MPI_COMM_WORLD while the main thread ping-pongs with MPI_Send/MPI_Recv. */
typedef struct {
  MPI_Comm comm;
  float *buf;
  int count, colls;
  int64_t first_start, last_finish;
  samples_t coll;
  atomic_bool finished;
} raw_coll_t;

static void *raw_coll_main(void *arg) {
  raw_coll_t *r = arg;
  r->first_start = now_ns();
  for (int i = 0; i < r->colls; i++) {
    int64_t t0 = now_ns();
    MPI_Allreduce(MPI_IN_PLACE, r->buf, r->count, MPI_FLOAT, MPI_SUM, r->comm);
    push(&r->coll, (double)(now_ns() - t0) / 1e3);
  }
  r->last_finish = now_ns();
  atomic_store(&r->finished, true);
  return NULL;
}

static void ov_raw_round(bench_t *b, raw_coll_t *r, samples_t *pp) {
  char sbuf[8] = {0}, rbuf[8] = {0};
  atomic_store(&r->finished, false);
  idle_barrier(b);
  pthread_t th;
  if (pthread_create(&th, NULL, raw_coll_main, r) != 0)
    die("pthread_create failed");
  int n = 0, cap = 4096;
  int64_t *t0 = xcalloc((size_t)cap, sizeof *t0), *t1 = xcalloc((size_t)cap, sizeof *t1);
  if (b->rank == 0) {
    for (bool stop = false; !stop;) {
      stop = atomic_load(&r->finished);
      sbuf[0] = stop;
      if (n == cap) {
        cap *= 2;
        t0 = realloc(t0, (size_t)cap * sizeof *t0);
        t1 = realloc(t1, (size_t)cap * sizeof *t1);
        if (!t0 || !t1)
          die("out of memory");
      }
      t0[n] = now_ns();
      MPI_Send(sbuf, 8, MPI_BYTE, 1, TAG_PING, MPI_COMM_WORLD);
      MPI_Recv(rbuf, 8, MPI_BYTE, 1, TAG_PING, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      t1[n++] = now_ns();
    }
  } else if (b->rank == 1) {
    do {
      MPI_Recv(rbuf, 8, MPI_BYTE, 0, TAG_PING, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(sbuf, 8, MPI_BYTE, 0, TAG_PING, MPI_COMM_WORLD);
    } while (!rbuf[0]);
  }
  pthread_join(th, NULL);
  if (b->rank == 0)
    for (int i = 0; i < n; i++)
      if (t0[i] >= r->first_start && t1[i] <= r->last_finish)
        push(pp, (double)(t1[i] - t0[i]) / 2e3);
  free(t0);
  free(t1);
}

static void stats_row(bench_t *b, const char *name, samples_t *s, const char *what) {
  double vals[4] = {median(s->v, s->n), percentile(s->v, s->n, 99), vmax(s->v, s->n),
                    (double)s->n};
  char extra[160];
  snprintf(extra, sizeof extra, "\"what\": \"%s\"", what);
  out_row_name(b, name, vals, extra);
}

void mode_overlap(bench_t *b) {
  static const column_t cols[] = {
      {"median_us", "median (us)"},
      {"p99_us", "p99 (us)"},
      {"max_us", "max (us)"},
      {"samples", "samples"},
  };
  size_t cbytes = b->o.coll_bytes ? b->o.coll_bytes : 16u << 20;
  int colls = b->o.colls ? b->o.colls : 20;
  out_mode(b, "overlap", "P2P during collective", "us", "case", "Case", 4, cols);
  if (b->size < 2) {
    out_note(b, "needs 2 ranks: skipped");
    out_mode_end(b, NULL, NULL);
    return;
  }
  if (cbytes / 4 > INT_MAX)
    die("--coll-bytes: too large");
  ov_t o = {.b = b};
  o.cbuf = bench_alloc(cbytes);
  o.tcoll = evmpi_tensor_flat(o.cbuf, EVMPI_FLOAT32, (int64_t)(cbytes / 4));
  o.ts = evmpi_tensor_flat(o.sbuf, EVMPI_UINT8, 8);
  o.tr = evmpi_tensor_flat(o.rbuf, EVMPI_UINT8, 8);
  raw_coll_t r = {.buf = bench_alloc(cbytes), .count = (int)(cbytes / 4), .colls = colls};
  MPI_Comm_dup(MPI_COMM_WORLD, &r.comm);
  samples_t pp_idle = {0}, pp_during = {0}, pp_raw = {0}, coll_alone = {0}, coll_pp = {0};

  out_note(b, "%d ranks run %d back-to-back %zu B allreduces on the group while ranks 0 and 1 "
           "ping-pong 8 B on it", b->size, colls, cbytes);
  out_note(b, "%d repetitions pooled; half round trips that began and ended within the "
           "collectives (rank 0), and the collectives' durations", b->o.reps);
  out_note(b, "pp-idle:   evmpi ping-pong, nothing else running");
  out_note(b, "pp-coll:   evmpi ping-pong while the group's worker runs the allreduces");
  out_note(b, "raw-coll:  MPI_Send/MPI_Recv ping-pong while a pthread runs MPI_Allreduce "
           "(raw baseline)");
  out_note(b, "coll:      an evmpi allreduce's duration (worker start to finish), no ping-pong");
  out_note(b, "coll-pp:   the same during the ping-pong");
  out_note(b, "raw-coll-t: the pthread's MPI_Allreduce duration during the raw ping-pong");
  out_header(b);
  ov_round(b, &o, 2, true, 0, NULL, NULL); /* warm-up */
  for (int rep = 0; rep < b->o.reps; rep++) {
    ov_round(b, &o, 0, true, 200, &pp_idle, NULL);
    ov_round(b, &o, colls, true, 0, &pp_during, &coll_pp);
    ov_round(b, &o, colls, false, 0, NULL, &coll_alone);
    ov_raw_round(b, &r, &pp_raw);
  }
  double coll_med = median(coll_alone.v, coll_alone.n);
  double during_med = median(pp_during.v, pp_during.n);
  double during_max = vmax(pp_during.v, pp_during.n);
  int during_n = pp_during.n;
  stats_row(b, "pp-idle", &pp_idle, "evmpi half round trip, idle");
  stats_row(b, "pp-coll", &pp_during, "evmpi half round trip during the collectives");
  stats_row(b, "raw-coll", &pp_raw, "raw half round trip during pthread collectives");
  stats_row(b, "coll", &coll_alone, "evmpi allreduce duration, alone");
  stats_row(b, "coll-pp", &coll_pp, "evmpi allreduce duration during the ping-pong");
  stats_row(b, "raw-coll-t", &r.coll, "pthread MPI_Allreduce duration during raw ping-pong");
  double per_coll = (double)during_n / ((double)colls * b->o.reps);
  char summary[320], text[320];
  snprintf(summary, sizeof summary,
           "\"coll_bytes\": %zu, \"pp_during_median_us\": %s, \"pp_during_max_us\": %s, "
           "\"coll_median_us\": %s, \"round_trips_per_coll\": %s, \"held_back\": %s",
           cbytes, jnum(during_med), jnum(during_max), jnum(coll_med), jnum(per_coll),
           per_coll < 2 ? "true" : "false");
  snprintf(text, sizeof text, "%.1f round trips per collective (held back would allow at most "
           "about 1): half round trip %.2f us (median) during collectives of %.2f us", per_coll,
           during_med, coll_med);
  out_mode_end(b, summary, text);
  MPI_Comm_free(&r.comm);
  free(r.coll.v);
  free(r.buf);
  free(o.cbuf);
  free(o.pp_t0);
  free(o.pp_t1);
  free(pp_idle.v);
  free(pp_during.v);
  free(pp_raw.v);
  free(coll_alone.v);
  free(coll_pp.v);
}
