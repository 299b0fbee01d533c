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
 *
 * Ranks above 1 sit out the point-to-point parts in idle_barrier (in the
 * libevent loop, not spinning in MPI). */
#include "bench.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TAG_PING = 11, TAG_ACK = 12 };

static void pair_barrier(bench_t *b) { MPI_Barrier(b->pair); }

static void ok_release(evmpi_work_t *w) {
  if (!evmpi_work_is_success(w))
    die(evmpi_work_error(w));
  evmpi_work_release(w);
}

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
  ok_release(w);
  if (--p->left > 0)
    pp0_ping(p);
  else
    p->done = true;
}

static void pp0_ping(pp_t *p) {
  evmpi_work_t *r;
  check(evmpi_recv(p->b->pg, &p->tr, 1, TAG_PING, &r));
  check(evmpi_work_on_complete(r, pp0_pong, p));
  send_released(p->b, &p->ts, 1, TAG_PING);
}

static void pp1_post(pp_t *p);

static void pp1_ping(evmpi_work_t *w, void *arg) {
  pp_t *p = arg;
  ok_release(w);
  if (--p->left > 0)
    pp1_post(p);
  else
    p->done = true;
  send_released(p->b, &p->ts, 0, TAG_PING);
}

static void pp1_post(pp_t *p) {
  evmpi_work_t *r;
  check(evmpi_recv(p->b->pg, &p->tr, 0, TAG_PING, &r));
  check(evmpi_work_on_complete(r, pp1_ping, p));
}

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

void mode_pingpong(bench_t *b) {
  static const column_t cols[] = {
      {"raw_us", "raw MPI (us)"},
      {"evmpi_us", "evmpi (us)"},
      {"diff_us", "evmpi-raw (us)"},
      {"ratio", "ratio"},
  };
  out_mode(b, "pingpong", "Ping-pong latency", "us", "bytes", "Size", 4, cols);
  if (b->size < 2) {
    out_note(b, "needs 2 ranks: skipped");
    out_mode_end(b, NULL, NULL);
    return;
  }
  size_t lo = sweep_min(b, 1), hi = sweep_max(b, 64u << 20);
  if (hi > INT_MAX)
    die("--max: more bytes than an int counts");
  char *sbuf = bench_alloc(hi), *rbuf = bench_alloc(hi);
  double *raw = xcalloc((size_t)b->o.reps, sizeof *raw);
  double *ev = xcalloc((size_t)b->o.reps, sizeof *ev);
  out_note(b, "ranks 0 and 1 of %d; raw: MPI_Send/MPI_Recv; evmpi: evmpi_send/evmpi_recv, the "
           "receive callback sends the next message", b->size);
  out_note(b, "median of %d repetitions (rank 0's time), us per half round trip", b->o.reps);
  out_header(b);
  bool active = b->rank < 2;
  for (size_t bytes = lo; bytes <= hi; bytes *= 2) {
    int n = (int)bytes;
    int iters = iters_for(b, bytes);
    idle_barrier(b);
    if (active) {
      pp_raw(b, sbuf, rbuf, n, iters / 10 + 1);
      pp_evmpi(b, sbuf, rbuf, n, iters / 10 + 1);
    }
    for (int r = 0; r < b->o.reps; r++) {
      idle_barrier(b);
      if (active) {
        raw[r] = pp_raw(b, sbuf, rbuf, n, iters);
        ev[r] = pp_evmpi(b, sbuf, rbuf, n, iters);
      }
    }
    double mr = median(raw, b->o.reps), me = median(ev, b->o.reps);
    double vals[4] = {mr, me, me - mr, me / mr};
    char extra[128];
    snprintf(extra, sizeof extra, "\"iters\": %d, \"raw_min_us\": %s, \"evmpi_min_us\": %s",
             iters, jnum(raw[0]), jnum(ev[0]));
    out_row_size(b, bytes, vals, extra);
  }
  idle_barrier(b);
  out_mode_end(b, NULL, NULL);
  free(raw);
  free(ev);
  free(sbuf);
  free(rbuf);
}

/* ---- msgrate -------------------------------------------------------------------------- */

typedef struct {
  bench_t *b;
  int n, window, windows;
  char *sbuf, *rbuf, ack;
  evmpi_tensor_t *ts; /* window tensors (receiver) or one (sender) */
  evmpi_tensor_t tack;
  int left;    /* callbacks left in this window */
  int windows_left;
  bool done;
} mr_t;

static double mr_raw(mr_t *m) {
  bench_t *b = m->b;
  int w = m->window;
  MPI_Request *req = xcalloc((size_t)w, sizeof *req);
  if (b->rank == 1)
    for (int i = 0; i < w; i++)
      MPI_Irecv(m->rbuf + (size_t)i * m->n, m->n, MPI_BYTE, 0, TAG_PING, MPI_COMM_WORLD, &req[i]);
  pair_barrier(b);
  int64_t t0 = now_ns();
  for (int k = 0; k < m->windows; k++) {
    if (b->rank == 0) {
      for (int i = 0; i < w; i++)
        MPI_Isend(m->sbuf, m->n, MPI_BYTE, 1, TAG_PING, MPI_COMM_WORLD, &req[i]);
      MPI_Waitall(w, req, MPI_STATUSES_IGNORE);
      MPI_Recv(&m->ack, 1, MPI_BYTE, 1, TAG_ACK, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else {
      MPI_Waitall(w, req, MPI_STATUSES_IGNORE);
      if (k + 1 < m->windows)
        for (int i = 0; i < w; i++)
          MPI_Irecv(m->rbuf + (size_t)i * m->n, m->n, MPI_BYTE, 0, TAG_PING, MPI_COMM_WORLD,
                    &req[i]);
      MPI_Send(&m->ack, 1, MPI_BYTE, 0, TAG_ACK, MPI_COMM_WORLD);
    }
  }
  double t = (double)(now_ns() - t0) / 1e9;
  free(req);
  return (double)w * m->windows / t;
}

static void mr_send_window(mr_t *m);
static void mr_post_window(mr_t *m);

static void mr_sender_cb(evmpi_work_t *w, void *arg) {
  mr_t *m = arg;
  ok_release(w);
  if (--m->left > 0)
    return;
  if (--m->windows_left > 0)
    mr_send_window(m);
  else
    m->done = true;
}

static void mr_send_window(mr_t *m) {
  evmpi_work_t *w;
  m->left = m->window + 1;
  check(evmpi_recv(m->b->pg, &m->tack, 1, TAG_ACK, &w));
  check(evmpi_work_on_complete(w, mr_sender_cb, m));
  for (int i = 0; i < m->window; i++) {
    check(evmpi_send(m->b->pg, &m->ts[0], 1, TAG_PING, &w));
    check(evmpi_work_on_complete(w, mr_sender_cb, m));
  }
}

static void mr_receiver_cb(evmpi_work_t *w, void *arg) {
  mr_t *m = arg;
  ok_release(w);
  if (--m->left > 0)
    return;
  if (--m->windows_left > 0)
    mr_post_window(m);
  else
    m->done = true;
  send_released(m->b, &m->tack, 0, TAG_ACK);
}

static void mr_post_window(mr_t *m) {
  evmpi_work_t *w;
  m->left = m->window;
  for (int i = 0; i < m->window; i++) {
    check(evmpi_recv(m->b->pg, &m->ts[i], 0, TAG_PING, &w));
    check(evmpi_work_on_complete(w, mr_receiver_cb, m));
  }
}

static double mr_evmpi(mr_t *m) {
  bench_t *b = m->b;
  m->windows_left = m->windows;
  m->done = false;
  if (b->rank == 1)
    mr_post_window(m);
  pair_barrier(b);
  int64_t t0 = now_ns();
  if (b->rank == 0)
    mr_send_window(m);
  loop_until(b, &m->done);
  double t = (double)(now_ns() - t0) / 1e9;
  return (double)m->window * m->windows / t;
}

void mode_msgrate(bench_t *b) {
  static const column_t cols[] = {
      {"raw_msgs", "raw MPI (msg/s)"},
      {"evmpi_msgs", "evmpi (msg/s)"},
      {"ratio", "evmpi/raw"},
  };
  out_mode(b, "msgrate", "Message rate", "messages/s", "bytes", "Size", 3, cols);
  if (b->size < 2) {
    out_note(b, "needs 2 ranks: skipped");
    out_mode_end(b, NULL, NULL);
    return;
  }
  size_t lo = sweep_min(b, 1), hi = sweep_max(b, 64u << 10);
  if (hi > INT_MAX / 2)
    die("--max: too large for msgrate");
  mr_t m = {.b = b, .window = b->o.window};
  m.sbuf = bench_alloc(hi);
  m.rbuf = bench_alloc(hi * (size_t)m.window);
  m.ts = xcalloc((size_t)m.window, sizeof *m.ts);
  m.tack = evmpi_tensor_flat(&m.ack, EVMPI_UINT8, 1);
  double *raw = xcalloc((size_t)b->o.reps, sizeof *raw);
  double *ev = xcalloc((size_t)b->o.reps, sizeof *ev);
  out_note(b, "ranks 0 -> 1 of %d, windows of %d messages, each window acknowledged by rank 1",
           b->size, m.window);
  out_note(b, "median of %d repetitions (rank 0's time), messages per second", b->o.reps);
  out_header(b);
  bool active = b->rank < 2;
  for (size_t bytes = lo; bytes <= hi; bytes *= 2) {
    m.n = (int)bytes;
    int per = iters_for(b, bytes * (size_t)m.window) / 10;
    m.windows = per < 4 ? 4 : per > 100 ? 100 : per;
    if (b->rank == 0)
      m.ts[0] = evmpi_tensor_flat(m.sbuf, EVMPI_UINT8, m.n);
    else
      for (int i = 0; i < m.window; i++)
        m.ts[i] = evmpi_tensor_flat(m.rbuf + (size_t)i * bytes, EVMPI_UINT8, m.n);
    idle_barrier(b);
    if (active) {
      int keep = m.windows;
      m.windows = 2;
      mr_raw(&m);
      mr_evmpi(&m);
      m.windows = keep;
    }
    for (int r = 0; r < b->o.reps; r++) {
      idle_barrier(b);
      if (active) {
        raw[r] = mr_raw(&m);
        ev[r] = mr_evmpi(&m);
      }
    }
    double mr = median(raw, b->o.reps), me = median(ev, b->o.reps);
    double vals[3] = {mr, me, me / mr};
    char extra[96];
    snprintf(extra, sizeof extra, "\"window\": %d, \"windows\": %d", m.window, m.windows);
    out_row_size(b, bytes, vals, extra);
  }
  idle_barrier(b);
  out_mode_end(b, NULL, NULL);
  free(raw);
  free(ev);
  free(m.ts);
  free(m.sbuf);
  free(m.rbuf);
}
