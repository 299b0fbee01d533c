/* bench_scale.c: evmpi with many receives pending and many groups alive.
 * Mode scale.
 *
 * pending: rank 1 posts P receives from rank 0 with a tag nothing is sent
 * to yet (raw: MPI_Irecv on a duplicate of MPI_COMM_WORLD; evmpi:
 * evmpi_recv on the group), then rank 0 sends windows of --window 8 B
 * messages with another tag, each window acknowledged, as msgrate does
 * (raw: MPI_Isend / MPI_Irecv / MPI_Waitall; evmpi: sends and receives
 * through callbacks). MPI matches an arriving message against the posted
 * receives in order, so the P pending ones slow both. Then rank 0 sends
 * the P messages the pending receives wait for. Messages per second, for
 * P = 0 and P = --pending (default 10000).
 *
 * groups: the 8 B allreduce chain of mode allreduce on one group while G
 * more groups stay alive and idle (raw: MPI_Allreduce with G more
 * duplicates of MPI_COMM_WORLD alive), G = 0, 16 and --groups (64). */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG_PEND 5151
#define TAG_MSG 5152
#define TAG_ACK2 5153

typedef struct {
  bench_t *b;
  int window, windows, left, windows_left;
  char sbuf[8], *rbuf, ack;
  evmpi_tensor_t ts, *tr, tack;
  bool done;
} sc_rate_t;

static void sc_pair_barrier(bench_t *b) {
  if (b->pair != MPI_COMM_NULL)
    MPI_Barrier(b->pair);
}

static double rate_raw(sc_rate_t *m, MPI_Comm comm) {
  bench_t *b = m->b;
  int w = m->window;
  MPI_Request *req = xcalloc((size_t)w, sizeof *req);
  if (b->rank == 1)
    for (int i = 0; i < w; i++)
      MPI_Irecv(m->rbuf + 8 * i, 8, MPI_BYTE, 0, TAG_MSG, comm, &req[i]);
  sc_pair_barrier(b);
  int64_t t0 = now_ns();
  for (int k = 0; k < m->windows; k++) {
    if (b->rank == 0) {
      for (int i = 0; i < w; i++)
        MPI_Isend(m->sbuf, 8, MPI_BYTE, 1, TAG_MSG, comm, &req[i]);
      MPI_Waitall(w, req, MPI_STATUSES_IGNORE);
      MPI_Recv(&m->ack, 1, MPI_BYTE, 1, TAG_ACK2, comm, MPI_STATUS_IGNORE);
    } else {
      MPI_Waitall(w, req, MPI_STATUSES_IGNORE);
      if (k + 1 < m->windows)
        for (int i = 0; i < w; i++)
          MPI_Irecv(m->rbuf + 8 * i, 8, MPI_BYTE, 0, TAG_MSG, comm, &req[i]);
      MPI_Send(&m->ack, 1, MPI_BYTE, 0, TAG_ACK2, comm);
    }
  }
  double t = (double)(now_ns() - t0) / 1e9;
  free(req);
  return (double)w * m->windows / t;
}

static void ev_send_window(sc_rate_t *m);
static void ev_post_window(sc_rate_t *m);

static void ev_sender_cb(evmpi_work_t *w, void *arg) {
  sc_rate_t *m = arg;
  if (!evmpi_work_is_success(w))
    die(evmpi_work_error(w));
  evmpi_work_release(w);
  if (--m->left > 0)
    return;
  if (--m->windows_left > 0)
    ev_send_window(m);
  else
    m->done = true;
}

static void ev_send_window(sc_rate_t *m) {
  evmpi_work_t *w;
  m->left = m->window + 1;
  check(evmpi_recv(m->b->pg, &m->tack, 1, TAG_ACK2, &w));
  check(evmpi_work_on_complete(w, ev_sender_cb, m));
  for (int i = 0; i < m->window; i++) {
    check(evmpi_send(m->b->pg, &m->ts, 1, TAG_MSG, &w));
    check(evmpi_work_on_complete(w, ev_sender_cb, m));
  }
}

static void release_cb(evmpi_work_t *w, void *arg) {
  (void)arg;
  if (!evmpi_work_is_success(w))
    die(evmpi_work_error(w));
  evmpi_work_release(w);
}

static void ev_receiver_cb(evmpi_work_t *w, void *arg) {
  sc_rate_t *m = arg;
  if (!evmpi_work_is_success(w))
    die(evmpi_work_error(w));
  evmpi_work_release(w);
  if (--m->left > 0)
    return;
  if (--m->windows_left > 0)
    ev_post_window(m);
  else
    m->done = true;
  evmpi_work_t *a;
  check(evmpi_send(m->b->pg, &m->tack, 0, TAG_ACK2, &a));
  check(evmpi_work_on_complete(a, release_cb, NULL));
}

static void ev_post_window(sc_rate_t *m) {
  evmpi_work_t *w;
  m->left = m->window;
  for (int i = 0; i < m->window; i++) {
    check(evmpi_recv(m->b->pg, &m->tr[i], 0, TAG_MSG, &w));
    check(evmpi_work_on_complete(w, ev_receiver_cb, m));
  }
}

static double rate_evmpi(sc_rate_t *m) {
  bench_t *b = m->b;
  m->windows_left = m->windows;
  m->done = false;
  if (b->rank == 1)
    ev_post_window(m);
  sc_pair_barrier(b);
  int64_t t0 = now_ns();
  if (b->rank == 0)
    ev_send_window(m);
  loop_until(b, &m->done);
  double t = (double)(now_ns() - t0) / 1e9;
  return (double)m->window * m->windows / t;
}

/* One repetition at P pending receives: raw then evmpi; rates of rank 0. */
static void pending_round(sc_rate_t *m, MPI_Comm comm, int p, char *pend, double *raw,
                          double *ev) {
  bench_t *b = m->b;
  MPI_Request *req = NULL;
  if (b->rank > 1) {
    idle_barrier(b);
    idle_barrier(b);
    return;
  }
  /* raw */
  if (b->rank == 1 && p > 0) {
    req = xcalloc((size_t)p, sizeof *req);
    for (int i = 0; i < p; i++)
      MPI_Irecv(pend + i, 1, MPI_BYTE, 0, TAG_PEND, comm, &req[i]);
  }
  *raw = rate_raw(m, comm);
  if (b->rank == 0)
    for (int i = 0; i < p; i++)
      MPI_Send(pend + i, 1, MPI_BYTE, 1, TAG_PEND, comm);
  else if (p > 0)
    MPI_Waitall(p, req, MPI_STATUSES_IGNORE);
  free(req);
  idle_barrier(b);
  /* evmpi */
  countdown_t cd = {p, p == 0};
  evmpi_tensor_t *tp = NULL;
  if (b->rank == 1 && p > 0) {
    tp = xcalloc((size_t)p, sizeof *tp);
    for (int i = 0; i < p; i++) {
      evmpi_work_t *w;
      tp[i] = evmpi_tensor_flat(pend + i, EVMPI_UINT8, 1);
      check(evmpi_recv(b->pg, &tp[i], 0, TAG_PEND, &w));
      check(evmpi_work_on_complete(w, count_done, &cd));
    }
  }
  *ev = rate_evmpi(m);
  if (b->rank == 0 && p > 0) {
    evmpi_tensor_t one = evmpi_tensor_flat(pend, EVMPI_UINT8, 1);
    for (int i = 0; i < p; i++) {
      evmpi_work_t *w;
      check(evmpi_send(b->pg, &one, 1, TAG_PEND, &w));
      check(evmpi_work_on_complete(w, count_done, &cd));
    }
  }
  loop_until(b, &cd.done);
  free(tp);
  idle_barrier(b);
}

static void mode_pending(bench_t *b) {
  static const column_t cols[] = {
      {"raw_msgs", "raw MPI (msg/s)"},
      {"evmpi_msgs", "evmpi (msg/s)"},
      {"ratio", "evmpi/raw"},
  };
  out_mode(b, "scale_pending", "Message rate with receives pending", "messages/s", "pending",
           "Pending", 3, cols);
  out_note(b, "ranks 0 -> 1 of %d, windows of %d 8 B messages, each acknowledged; rank 1 has "
           "Pending receives posted for another tag", b->size, b->o.window);
  out_note(b, "median of %d repetitions (rank 0's time), messages per second", b->o.reps);
  out_header(b);
  sc_rate_t m = {.b = b, .window = b->o.window};
  m.rbuf = xcalloc((size_t)m.window, 8);
  m.tr = xcalloc((size_t)m.window, sizeof *m.tr);
  for (int i = 0; i < m.window; i++)
    m.tr[i] = evmpi_tensor_flat(m.rbuf + 8 * i, EVMPI_UINT8, 8);
  m.ts = evmpi_tensor_flat(m.sbuf, EVMPI_UINT8, 8);
  m.tack = evmpi_tensor_flat(&m.ack, EVMPI_UINT8, 1);
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  int ps[2] = {0, b->o.pending};
  char *pend = xcalloc((size_t)b->o.pending + 1, 1);
  double *raw = xcalloc((size_t)b->o.reps, sizeof *raw);
  double *ev = xcalloc((size_t)b->o.reps, sizeof *ev);
  char summary[128] = "";
  for (int k = 0; k < 2; k++) {
    int p = ps[k];
    /* A pending receive costs each arriving message a match: fewer
     * windows when many are pending keep a repetition short. */
    m.windows = p >= 1000 ? 4 : 200;
    double d;
    pending_round(&m, comm, p, pend, &d, &d); /* warm-up */
    for (int r = 0; r < b->o.reps; r++)
      pending_round(&m, comm, p, pend, &raw[r], &ev[r]);
    double vals[3] = {median(raw, b->o.reps), median(ev, b->o.reps), 0};
    vals[2] = vals[1] / vals[0];
    MPI_Bcast(vals, 3, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    out_row_size(b, (size_t)p, vals, NULL);
    if (k == 1)
      snprintf(summary, sizeof summary, "\"pending\": %d, \"ratio\": %s", p, jnum(vals[2]));
  }
  out_mode_end(b, summary, NULL);
  MPI_Comm_free(&comm);
  free(pend);
  free(raw);
  free(ev);
  free(m.rbuf);
  free(m.tr);
}

/* ---- groups ------------------------------------------------------------------------- */

typedef struct {
  bench_t *b;
  float x[2];
  evmpi_tensor_t t;
} sc_ar_t;

static double ar_raw(void *ctx, int iters) {
  sc_ar_t *c = ctx;
  MPI_Barrier(MPI_COMM_WORLD);
  int64_t t0 = now_ns();
  for (int i = 0; i < iters; i++)
    MPI_Allreduce(MPI_IN_PLACE, c->x, 2, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  return slowest((double)(now_ns() - t0) / 1e3 / iters);
}

static int ar_submit(void *ctx, evmpi_work_t **w) {
  sc_ar_t *c = ctx;
  return evmpi_allreduce(c->b->pg, &c->t, EVMPI_SUM, w);
}

static double ar_ev(void *ctx, int iters) {
  sc_ar_t *c = ctx;
  return time_chain(c->b, ar_submit, c, iters);
}

static void mode_groups(bench_t *b) {
  out_mode(b, "scale_groups", "8 B allreduce with groups alive", "us", "groups", "Groups", 4,
           latency_cols);
  out_note(b, "%d ranks; Groups more groups (raw: duplicates of MPI_COMM_WORLD) alive and idle "
           "while one runs the allreduce chain of mode allreduce", b->size);
  out_note(b, "median of %d repetitions (the slowest rank's time), us per operation", b->o.reps);
  out_header(b);
  sc_ar_t c = {.b = b};
  c.t = evmpi_tensor_flat(c.x, EVMPI_FLOAT32, 2);
  int counts[3] = {0, 16, b->o.groups};
  int max = b->o.groups > 16 ? b->o.groups : 16;
  evmpi_pg_t **g = xcalloc((size_t)max, sizeof *g);
  MPI_Comm *comms = xcalloc((size_t)max, sizeof *comms);
  int alive = 0;
  for (int k = 0; k < 3; k++) {
    if (k > 0 && counts[k] <= counts[k - 1])
      continue;
    for (; alive < counts[k]; alive++) {
      check(evmpi_pg_create(b->base, NULL, 0, &g[alive]));
      MPI_Comm_dup(MPI_COMM_WORLD, &comms[alive]);
    }
    latency_row(b, (size_t)alive, iters_for(b, 8), ar_raw, ar_ev, &c);
  }
  for (int i = 0; i < alive; i++) {
    evmpi_pg_destroy(g[i]);
    MPI_Comm_free(&comms[i]);
  }
  out_mode_end(b, NULL, NULL);
  free(g);
  free(comms);
}

void mode_scale(bench_t *b) {
  if (b->size < 2)
    die("scale needs at least 2 ranks");
  mode_pending(b);
  mode_groups(b);
}
