/* bench_scale.c: evmpi with many receives pending and many groups alive.
 * Mode scale.
 *
 * pending: rank 1 posts P receives from rank 0 with a tag nothing is sent
 * to yet (raw: MPI_Irecv on a duplicate of MPI_COMM_WORLD; evmpi:
 * evmpi_recv on the group), then rank 0 sends windows of --window 8 B
 * messages with another tag, each window acknowledged: mode msgrate's run
 * (raw: MPI_Isend / MPI_Irecv / MPI_Waitall; evmpi: sends and receives
 * through callbacks). MPI matches an arriving message against the posted
 * receives in order, so the P pending ones slow both. Then rank 0 sends
 * the P messages the pending receives wait for. Messages per second, for
 * P = 0 and P = --pending (default 10000). The pending receives share one
 * tag, or with --pending-tags distinct each has its own (a server's
 * receives for many clients or requests: every completion then has
 * thousands of other channels before it in the poller's list).
 *
 * groups: the 8 B allreduce chain of mode allreduce on one group while G
 * more groups stay alive and idle (raw: MPI_Allreduce with G more
 * duplicates of MPI_COMM_WORLD alive), G = 0, 16 and --groups (64). */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG_PEND 5151 /* no message of msgrate's has it */

/* The tag of pending receive i. */
static int pend_tag(const bench_t *b, int i) { return TAG_PEND + (b->o.pending_distinct ? i : 0); }

/* One repetition at P pending receives: raw then evmpi; rates of rank 0. */
static void pending_round(msgrate_t *m, MPI_Comm comm, int p, char *pend, MPI_Status *st,
                          double *raw, double *ev) {
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
      MPI_Irecv(pend + i, 1, MPI_BYTE, 0, pend_tag(b, i), comm, &req[i]);
  }
  *raw = msgrate_raw(m, comm);
  if (b->rank == 0)
    for (int i = 0; i < p; i++)
      MPI_Send(pend + i, 1, MPI_BYTE, 1, pend_tag(b, i), comm);
  else if (p > 0)
    MPI_Waitall(p, req, st); /* real statuses: see msgrate_raw */
  free(req);
  idle_barrier(b);
  /* evmpi */
  countdown_t cd = {p, p == 0};
  evmpi_tensor_t *tp = NULL;
  if (b->rank == 1 && p > 0) {
    tp = xcalloc((size_t)p, sizeof *tp);
    for (int i = 0; i < p; i++) {
      tp[i] = evmpi_tensor_flat(pend + i, EVMPI_UINT8, 1);
      post_recv(b, &tp[i], 0, pend_tag(b, i), count_done, &cd);
    }
  }
  *ev = msgrate_evmpi(m);
  if (b->rank == 0 && p > 0) {
    evmpi_tensor_t one = evmpi_tensor_flat(pend, EVMPI_UINT8, 1);
    for (int i = 0; i < p; i++)
      post_send(b, &one, 1, pend_tag(b, i), count_done, &cd);
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
           "Pending receives posted for %s", b->size, b->o.window,
           b->o.pending_distinct ? "other tags, one each" : "another tag");
  out_note(b, "median of %d repetitions (rank 0's time), messages per second", b->o.reps);
  out_header(b);
  int *tag_ub = NULL, flag = 0;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &flag);
  if (b->o.pending_distinct && flag && TAG_PEND + (long)b->o.pending > (long)*tag_ub)
    die("--pending with --pending-tags distinct: the tags would pass MPI_TAG_UB");
  msgrate_t m;
  msgrate_init(&m, b, 8);
  msgrate_size(&m, 8);
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  int ps[2] = {0, b->o.pending};
  char *pend = xcalloc((size_t)b->o.pending + 1, 1);
  MPI_Status *st = xcalloc((size_t)b->o.pending + 1, sizeof *st);
  double *raw = xcalloc((size_t)b->o.reps, sizeof *raw);
  double *ev = xcalloc((size_t)b->o.reps, sizeof *ev);
  char summary[128] = "";
  for (int k = 0; k < 2; k++) {
    int p = ps[k];
    /* A pending receive costs each arriving message a match: fewer
     * windows when many are pending keep a repetition short. */
    m.windows = p >= 1000 ? 4 : 200;
    double d;
    pending_round(&m, comm, p, pend, st, &d, &d); /* warm-up */
    for (int r = 0; r < b->o.reps; r++)
      pending_round(&m, comm, p, pend, st, &raw[r], &ev[r]);
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
  free(st);
  free(raw);
  free(ev);
  msgrate_free(&m);
}

/* ---- groups ------------------------------------------------------------------------- */

typedef struct {
  bench_t *b;
  float x[2];
  evmpi_tensor_t t;
} sc_ar_t;

static double ar_raw(void *ctx, int iters) {
  sc_ar_t *c = ctx;
  return time_raw_allreduce(c->x, 2, iters);
}

static double ar_ev(void *ctx, int iters) {
  sc_ar_t *c = ctx;
  return time_evmpi_allreduce(c->b, &c->t, iters);
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
