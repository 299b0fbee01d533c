/* bench_coll.c: collectives, raw MPI against evmpi in the same run.
 *
 * allreduce, broadcast, allgather_base: for each size, R repetitions of N
 * back-to-back operations, timed as a whole: raw blocking MPI on the
 * calling thread, and evmpi submit-to-callback (the completion callback on
 * the libevent loop submits the next operation). A repetition's time is
 * the slowest rank's; reported is the median over repetitions of the time
 * per operation, raw and evmpi alternating so that drift in the machine's
 * load hits both alike.
 *
 * coalesced: T tensors of each size reduced three ways (raw, one evmpi
 * work per tensor, one coalesced work).
 *
 * pipelined: N operations queued at once (evmpi submits all N, then waits
 * for the N callbacks) against N back-to-back raw calls; operations per
 * second, for N = 1, 10, ... up to --ops-count. */
#include "bench.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the size sweep, shared by the three collectives ------------------------------ */

typedef struct coll coll_t;

typedef struct {
  const char *op, *name, *what;
  evmpi_dtype_t dtype;
  MPI_Datatype mpi_type;
  void (*raw)(coll_t *c);                          /* one raw operation */
  int (*submit)(coll_t *c, evmpi_work_t **work);   /* one evmpi operation */
} coll_spec_t;

struct coll {
  bench_t *b;
  const coll_spec_t *spec;
  void *in, *out;   /* the input (in place for allreduce and broadcast) and allgather's output */
  int count;        /* elements per rank */
  evmpi_tensor_t tin, tout;
};

static void raw_allreduce(coll_t *c) {
  MPI_Allreduce(MPI_IN_PLACE, c->in, c->count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}
static int ev_allreduce(coll_t *c, evmpi_work_t **w) {
  return evmpi_allreduce(c->b->pg, &c->tin, EVMPI_SUM, w);
}
static void raw_broadcast(coll_t *c) { MPI_Bcast(c->in, c->count, MPI_BYTE, 0, MPI_COMM_WORLD); }
static int ev_broadcast(coll_t *c, evmpi_work_t **w) {
  return evmpi_broadcast(c->b->pg, &c->tin, 0, w);
}
static void raw_allgather(coll_t *c) {
  MPI_Allgather(c->in, c->count, MPI_BYTE, c->out, c->count, MPI_BYTE, MPI_COMM_WORLD);
}
static int ev_allgather(coll_t *c, evmpi_work_t **w) {
  return evmpi_allgather_base(c->b->pg, &c->tout, &c->tin, w);
}

static const coll_spec_t specs[] = {
    {"allreduce", "Allreduce", "in-place float32 sum", EVMPI_FLOAT32, MPI_FLOAT, raw_allreduce,
     ev_allreduce},
    {"broadcast", "Broadcast", "uint8 from rank 0", EVMPI_UINT8, MPI_BYTE, raw_broadcast,
     ev_broadcast},
    {"allgather_base", "Allgather_base", "uint8, Size per rank into one flat output",
     EVMPI_UINT8, MPI_BYTE, raw_allgather, ev_allgather},
};

static double time_raw(void *ctx, int iters) {
  coll_t *c = ctx;
  MPI_Barrier(MPI_COMM_WORLD);
  int64_t t0 = now_ns();
  for (int i = 0; i < iters; i++)
    c->spec->raw(c);
  return slowest((double)(now_ns() - t0) / 1e3 / iters);
}

static int submit_one(void *ctx, evmpi_work_t **w) {
  coll_t *c = ctx;
  return c->spec->submit(c, w);
}

static double time_evmpi(void *ctx, int iters) {
  coll_t *c = ctx;
  return time_chain(c->b, submit_one, c, iters);
}

static void sweep(bench_t *b, const coll_spec_t *spec) {
  size_t elem = evmpi_dtype_size(spec->dtype);
  size_t lo = sweep_min(b, elem), hi = sweep_max(b, 64u << 20);
  if (hi / elem > INT_MAX)
    die("--max: more elements than an int counts");
  bool gather = spec->raw == raw_allgather;
  coll_t c = {.b = b, .spec = spec};
  c.in = bench_alloc(hi);
  if (gather)
    c.out = bench_alloc(hi * (size_t)b->size);
  out_mode(b, spec->op, spec->name, "us", "bytes", "Size", 4, latency_cols);
  out_note(b, "%d ranks, %s; raw: blocking MPI back to back; evmpi: submit to callback, the "
           "callback submits the next", b->size, spec->what);
  out_note(b, "median of %d repetitions (the slowest rank's time), us per operation", b->o.reps);
  out_header(b);
  for (size_t bytes = lo; bytes <= hi; bytes *= 2) {
    c.count = (int)(bytes / elem);
    c.tin = evmpi_tensor_flat(c.in, spec->dtype, c.count);
    if (gather)
      c.tout = evmpi_tensor_flat(c.out, spec->dtype, (int64_t)c.count * b->size);
    latency_row(b, bytes, iters_for(b, bytes), time_raw, time_evmpi, &c);
  }
  out_mode_end(b, NULL, NULL);
  free(c.in);
  free(c.out);
}

void mode_allreduce(bench_t *b) { sweep(b, &specs[0]); }
void mode_broadcast(bench_t *b) { sweep(b, &specs[1]); }
void mode_allgather_base(bench_t *b) { sweep(b, &specs[2]); }

/* ---- coalesced: T tensors, three ways ---------------------------------------------- */

/* mode 0: raw, 1: one work per tensor, 2: one coalesced work. us for the set. */
static double coalesced_round(bench_t *b, evmpi_tensor_t *ts, int n, int mode) {
  MPI_Barrier(MPI_COMM_WORLD);
  int64_t t0 = now_ns();
  if (mode == 0) {
    for (int i = 0; i < n; i++)
      MPI_Allreduce(MPI_IN_PLACE, ts[i].data, (int)ts[i].shape[0], MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
    return slowest((double)(now_ns() - t0) / 1e3);
  }
  countdown_t cd = {mode == 1 ? n : 1, false};
  evmpi_work_t *w;
  if (mode == 1) {
    for (int i = 0; i < n; i++) {
      check(evmpi_allreduce(b->pg, &ts[i], EVMPI_SUM, &w));
      check(evmpi_work_on_complete(w, count_done, &cd));
    }
  } else {
    check(evmpi_allreduce_coalesced(b->pg, ts, (size_t)n, EVMPI_SUM, &w));
    check(evmpi_work_on_complete(w, count_done, &cd));
  }
  loop_until(b, &cd.done);
  return slowest((double)(now_ns() - t0) / 1e3);
}

void mode_coalesced(bench_t *b) {
  int n = b->o.tensors;
  size_t lo = sweep_min(b, 4), hi = sweep_max(b, 16u << 20);
  if (hi / 4 > INT_MAX)
    die("--max: more elements than an int counts");
  float *buf = bench_alloc(hi * (size_t)n);
  evmpi_tensor_t *ts = xcalloc((size_t)n, sizeof *ts);
  double *t[3];
  for (int m = 0; m < 3; m++)
    t[m] = xcalloc((size_t)b->o.reps, sizeof **t);
  static const column_t cols[] = {
      {"raw_us", "raw MPI (us)"},
      {"each_us", "evmpi each (us)"},
      {"coalesced_us", "evmpi coal. (us)"},
      {"coalesced_vs_each", "coal./each"},
  };
  out_mode(b, "coalesced", "Allreduce coalesced", "us", "bytes", "Size", 4, cols);
  out_note(b, "%d ranks, %d float32 tensors of each size: raw (one MPI_Allreduce per tensor), "
           "evmpi one work per tensor (all queued), evmpi one allreduce_coalesced work", b->size,
           n);
  out_note(b, "median of %d repetitions (the slowest rank's time), us per set of tensors",
           b->o.reps);
  out_header(b);
  for (size_t bytes = lo; bytes <= hi; bytes *= 2) {
    int count = (int)(bytes / 4);
    for (int i = 0; i < n; i++)
      ts[i] = evmpi_tensor_flat(buf + (size_t)i * (size_t)count, EVMPI_FLOAT32, count);
    for (int m = 0; m < 3; m++)
      coalesced_round(b, ts, n, m); /* warm-up */
    for (int r = 0; r < b->o.reps; r++)
      for (int m = 0; m < 3; m++)
        t[m][r] = coalesced_round(b, ts, n, m);
    double md[4];
    for (int m = 0; m < 3; m++)
      md[m] = median(t[m], b->o.reps);
    md[3] = md[2] / md[1];
    out_row_size(b, bytes, md, NULL);
  }
  out_mode_end(b, NULL, NULL);
  for (int m = 0; m < 3; m++)
    free(t[m]);
  free(ts);
  free(buf);
}

/* ---- pipelined: N operations queued at once ---------------------------------------------- */

static double pipe_raw(float *buf, int count, int n) {
  MPI_Barrier(MPI_COMM_WORLD);
  int64_t t0 = now_ns();
  for (int i = 0; i < n; i++)
    MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  return slowest((double)(now_ns() - t0) / 1e9);
}

/* Every operation reduces the same buffer: the worker runs them one at a
 * time, in order, as the raw loop does. */
static double pipe_evmpi(bench_t *b, evmpi_tensor_t *t, int n) {
  countdown_t cd = {n, false};
  MPI_Barrier(MPI_COMM_WORLD);
  int64_t t0 = now_ns();
  for (int i = 0; i < n; i++) {
    evmpi_work_t *w;
    check(evmpi_allreduce(b->pg, t, EVMPI_SUM, &w));
    check(evmpi_work_on_complete(w, count_done, &cd));
  }
  loop_until(b, &cd.done);
  return slowest((double)(now_ns() - t0) / 1e9);
}

void mode_pipelined(bench_t *b) {
  size_t bytes = b->o.msg_bytes - b->o.msg_bytes % 4;
  if (bytes < 4 || bytes / 4 > INT_MAX)
    die("--msg: out of range for float32 elements");
  int count = (int)(bytes / 4);
  float *buf = bench_alloc(bytes);
  evmpi_tensor_t t = evmpi_tensor_flat(buf, EVMPI_FLOAT32, count);
  double *raw = xcalloc((size_t)b->o.reps, sizeof *raw);
  double *ev = xcalloc((size_t)b->o.reps, sizeof *ev);
  static const column_t cols[] = {
      {"raw_ops", "raw MPI (ops/s)"},
      {"evmpi_ops", "evmpi (ops/s)"},
      {"ratio", "evmpi/raw"},
  };
  out_mode(b, "pipelined", "Pipelined allreduce", "ops/s", "ops", "Ops", 3, cols);
  out_note(b, "%d ranks, %zu B float32 allreduces: evmpi submits all Ops, then waits for the Ops "
           "callbacks; raw: Ops back-to-back MPI_Allreduce", b->size, bytes);
  out_note(b, "median of %d repetitions (the slowest rank's time), operations per second",
           b->o.reps);
  out_header(b);
  char summary[160] = "";
  for (long n = 1; n <= b->o.nops; n = n * 10 > b->o.nops && n < b->o.nops ? b->o.nops : n * 10) {
    pipe_raw(buf, count, (int)(n / 10 + 1)); /* warm-up */
    pipe_evmpi(b, &t, (int)(n / 10 + 1));
    for (int r = 0; r < b->o.reps; r++) {
      raw[r] = pipe_raw(buf, count, (int)n);
      ev[r] = pipe_evmpi(b, &t, (int)n);
    }
    double rr = (double)n / median(raw, b->o.reps), re = (double)n / median(ev, b->o.reps);
    double vals[3] = {rr, re, re / rr};
    char extra[64];
    snprintf(extra, sizeof extra, "\"bytes\": %zu", bytes);
    out_row_size(b, (size_t)n, vals, extra);
    if (n == b->o.nops)
      snprintf(summary, sizeof summary, "\"ops\": %ld, \"bytes\": %zu, \"ratio\": %s", n, bytes,
               jnum(re / rr));
  }
  out_mode_end(b, summary, NULL);
  free(raw);
  free(ev);
  free(buf);
}
