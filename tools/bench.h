/* bench.h: what the evmpi-bench modes share: options, the run context, the
 * OSU-shaped output (a text table, or one JSON object for the whole run),
 * statistics and the helpers that wait in the libevent loop. */
#ifndef EVMPI_BENCH_H
#define EVMPI_BENCH_H

#include <event2/event.h>
#include <evmpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- options ---------------------------------------------------------------- */

typedef struct {
  const char *ops;          /* --op: a comma-separated list of modes, or "default" or "all" */
  size_t min_bytes;         /* --min: 0 = the mode's smallest (its element size) */
  size_t max_bytes;         /* --max: 0 = the mode's default */
  int iters;                /* --iters: 0 = scaled by size */
  int reps;                 /* --reps: repetitions, the median is reported */
  int tensors;              /* --tensors: coalesced */
  int nops;                 /* --ops-count: pipelined and wakeups */
  size_t msg_bytes;         /* --msg: pipelined and wakeups message size */
  int window;               /* --window: msgrate */
  size_t coll_bytes;        /* --coll-bytes: overlap (default 16 MiB) and responsiveness (64 MiB) */
  int colls;                /* --colls: collectives per repetition in overlap and responsiveness */
  int timer_us;             /* --timer-us: responsiveness timer period */
  int idle_ms;              /* --idle-ms: idle, each window's length */
  int settle_ms;            /* --settle-ms: idle, how long a case waits before its window */
  int groups;               /* --groups: idle and scale, groups alive at once */
  int pending;              /* --pending: scale, receives left pending */
  bool pending_distinct;    /* --pending-tags distinct: each of them its own tag */
  bool json;                /* --json: JSON instead of the tables */
  const char *json_out;     /* --json-out: the tables, and the JSON in this file */
} options_t;

/* ---- the run -------------------------------------------------------------------- */

typedef struct bench {
  options_t o;
  int rank, size;
  struct event_base *base; /* the group's loop (responsiveness swaps in its own) */
  evmpi_pg_t *pg;          /* over MPI_COMM_WORLD, on base */
  MPI_Comm pair;           /* ranks 0 and 1 (MPI_COMM_NULL elsewhere) */
  /* output state: rank 0 prints the tables to txt, the JSON to js */
  FILE *txt, *js;
  bool first_mode, first_row;
  const char *row_key, *row_label;
  int ncols;
  const struct column *cols;
} bench_t;

/* ---- output ----------------------------------------------------------------------
 * Text: "# evmpi-bench <Name>", comment lines, then a header whose first
 * column ("# Size") is 10 wide and left-aligned and whose figures are 20
 * wide with 2 decimals, as the OSU micro-benchmarks print them.
 * JSON (--json): one object for the run,
 *   {"tool": "evmpi-bench", "ranks": N, ..., "modes": [
 *   {"op": ..., "name": ..., "unit": ..., "columns": [...], "results": [
 *     {<row_key>: ..., <column keys>: ..., <extra>},   <- one result per line
 *   ], "summary": {...}},
 *   ...]}
 * Every result object is on a line of its own so that line tools (tools/plot
 * uses awk) can read the file without a JSON parser. --json-out FILE
 * prints the tables and writes the JSON to FILE, from the same run. */

typedef struct column {
  const char *key;   /* JSON key */
  const char *label; /* table header, at most 19 characters */
} column_t;

void out_begin(bench_t *b);
void out_end(bench_t *b);
/* Starts a mode's table. row_key: the JSON key of the first column,
 * row_label its header ("Size" is printed "# Size"). */
void out_mode(bench_t *b, const char *op, const char *name, const char *unit,
              const char *row_key, const char *row_label, int ncols, const column_t *cols);
/* A comment line under the mode's title (before the header; text only). */
void out_note(bench_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the header line (after the notes). */
void out_header(bench_t *b);
/* A row: vals[ncols]; extra: JSON-only fields ("\"iters\": 5"), or NULL. */
void out_row_size(bench_t *b, size_t first, const double *vals, const char *extra);
void out_row_name(bench_t *b, const char *name, const double *vals, const char *extra);
/* Ends the mode: summary is the inside of a JSON object ("\"k\": 1") or
 * NULL; text is printed as comment lines in the table, or NULL. */
void out_mode_end(bench_t *b, const char *summary, const char *text);
/* v for JSON: "%.3f", or null when not finite. One of 8 rotating buffers. */
const char *jnum(double v);

/* ---- statistics, time ---------------------------------------------------------------- */

double median(double *v, int n);                /* sorts v */
double percentile(double *v, int n, double p);  /* sorts v; p in 0..100, nearest rank */
double vmax(const double *v, int n);

/* A growing array of samples. */
typedef struct {
  double *v;
  int n, cap;
} samples_t;
void push(samples_t *s, double x);
int64_t now_ns(void);
static inline double now_us(void) { return (double)now_ns() / 1e3; }

/* The largest of every rank's t (collective over MPI_COMM_WORLD). */
double slowest(double t);

/* Iterations for one repetition at this size: --iters, or 1000 up to 64
 * KiB, then fewer (64 MiB of data per repetition, at least 2). */
int iters_for(const bench_t *b, size_t bytes);

/* The sizes of a sweep: min (or elem) doubling up to max (or def_max). */
size_t sweep_min(const bench_t *b, size_t elem);
size_t sweep_max(const bench_t *b, size_t def_max);

/* ---- waiting ------------------------------------------------------------------------- */

/* A barrier over MPI_COMM_WORLD that waits in the libevent loop
 * (MPI_Ibarrier tested from a 100 us timer) rather than spinning inside
 * MPI: ranks that sit out a point-to-point test leave the cores to those
 * that run it. */
void idle_barrier(bench_t *b);

/* Runs the loop (event_base_loop(EVLOOP_ONCE), which blocks until an
 * event is ready) until *done: the callbacks set it. */
void loop_until(bench_t *b, const bool *done);

/* Counts completions down: count_done (a work callback) releases the work,
 * dies if it failed, and sets done when left reaches 0. */
typedef struct {
  int left;
  bool done;
} countdown_t;
void count_done(evmpi_work_t *work, void *arg);

/* Dies if work failed (the benchmark measures nothing then), else
 * releases it: what every completion callback of the modes does first. */
void release_ok(evmpi_work_t *work);

/* evmpi_recv and evmpi_send on b->pg with cb(arg) as the completion
 * callback; die on a refusal. */
void post_recv(bench_t *b, evmpi_tensor_t *t, int src, int tag, evmpi_work_cb cb, void *arg);
void post_send(bench_t *b, evmpi_tensor_t *t, int dst, int tag, evmpi_work_cb cb, void *arg);

/* Times iters evmpi operations in a chain: submit(ctx) issues one, and its
 * completion callback (on the loop) issues the next. Returns the slowest
 * rank's us per operation (starts with an MPI_Barrier; collective). */
double time_chain(bench_t *b, int (*submit)(void *ctx, evmpi_work_t **work), void *ctx,
                  int iters);

/* An in-place float32 sum, iters times: back-to-back MPI_Allreduce over
 * MPI_COMM_WORLD on count floats of buf, and an evmpi_allreduce chain
 * (time_chain) of t on b->pg. Each returns the slowest rank's us per
 * operation (collective). */
double time_raw_allreduce(float *buf, int count, int iters);
double time_evmpi_allreduce(bench_t *b, evmpi_tensor_t *t, int iters);

void die(const char *what) __attribute__((noreturn));
void check(int rc); /* dies with evmpi_last_error() unless EVMPI_OK */
void *xcalloc(size_t n, size_t size);

/* Touches every page, so that first-use faults stay out of the timings. */
void *bench_alloc(size_t bytes);

/* ---- raw against evmpi, by size ------------------------------------------------------ */

/* The columns of a latency sweep: raw us, evmpi us, their difference, ratio. */
extern const column_t latency_cols[4];
/* Times one size of a latency sweep: a warm-up of each side (a tenth of
 * iters), then --reps repetitions of iters operations, raw and evmpi in
 * turn, so that drift in the machine's load hits both; prints the row of
 * medians. raw and ev run iters operations (on every rank: a side that
 * runs on some ranks only keeps the others waiting inside it) and return
 * the us per operation that rank 0 reports (the slowest rank's, or rank
 * 0's own). */
void latency_row(bench_t *b, size_t bytes, int iters, double (*raw)(void *ctx, int iters),
                 double (*ev)(void *ctx, int iters), void *ctx);

/* ---- message rate (bench_p2p.c: modes msgrate and scale) ----------------------------- */

/* Rank 0 sends windows of --window messages of n bytes to rank 1, which
 * posts the next window's receives, then acknowledges the window with one
 * message; windows windows a run. Only ranks 0 and 1 run it. */
typedef struct {
  bench_t *b;
  int n, window, windows; /* windows: set by the caller before each run */
  char *sbuf, *rbuf, ack;
  evmpi_tensor_t *ts; /* the window's receive tensors (rank 1) or the one sent (rank 0) */
  evmpi_tensor_t tack;
  MPI_Request *req;   /* raw: the window's requests */
  MPI_Status *st;     /* and their statuses */
  int left;           /* evmpi and minimal: callbacks left in this window */
  int windows_left;
  bool done;
  /* minimal (bench_p2p.c): the pending requests and their callbacks */
  MPI_Request *mreq;
  void (**mcb)(void *m);
  int *midx;
  MPI_Status *mst;
  int mn;
} msgrate_t;

/* Buffers for messages of up to max_bytes; msgrate_free frees them. */
void msgrate_init(msgrate_t *m, bench_t *b, size_t max_bytes);
/* Messages of n bytes (n <= max_bytes) from the next run on. */
void msgrate_size(msgrate_t *m, int n);
void msgrate_free(msgrate_t *m);
/* One run with MPI_Isend/MPI_Irecv/MPI_Waitall on comm (a receive posted
 * on comm slows its matching), and one with evmpi_send/evmpi_recv
 * callbacks on b->pg. Each returns messages per second (rank 0's rate on
 * rank 0). */
double msgrate_raw(msgrate_t *m, MPI_Comm comm);
double msgrate_evmpi(msgrate_t *m);

/* ---- idle and scale helpers (bench_idle.c) -------------------------------------------- */

/* Runs the loop for ns (a timer ends it; the loop blocks in between). */
void loop_for(bench_t *b, int64_t ns);
/* The process's threads (/proc/self/task) and resident set in KiB; -1
 * where /proc cannot say. */
int bench_threads(void);
long bench_rss_kib(void);

/* ---- the modes ----------------------------------------------------------------------- */

void mode_allreduce(bench_t *b);
void mode_broadcast(bench_t *b);
void mode_allgather_base(bench_t *b);
void mode_coalesced(bench_t *b);
void mode_pipelined(bench_t *b);
void mode_pingpong(bench_t *b);
void mode_msgrate(bench_t *b);
void mode_overlap(bench_t *b);
void mode_responsiveness(bench_t *b);
void mode_wakeups(bench_t *b);
void mode_idle(bench_t *b);
void mode_scale(bench_t *b);
#ifdef EVMPI_BENCH_CUDA
void mode_cuda(bench_t *b); /* bench_cuda.c, built with CUDA */
#endif

#endif /* EVMPI_BENCH_H */
