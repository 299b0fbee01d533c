/* bench_util.c: output, statistics and waiting helpers of evmpi-bench. */
#include "bench.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ROW_WIDTH 10   /* the first column, left-aligned */
#define FIELD_WIDTH 20 /* every figure */
#define FIELD_PREC 2

/* ---- output ----------------------------------------------------------------- */

static void json_string(FILE *f, const char *s) {
  putc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fprintf(f, "\\%c", *s);
    else if ((unsigned char)*s < 0x20)
      fprintf(f, "\\u%04x", (unsigned char)*s);
    else
      putc(*s, f);
  }
  putc('"', f);
}

const char *jnum(double v) {
  static _Thread_local char bufs[8][32];
  static _Thread_local int next;
  char *buf = bufs[next++ % 8];
  if (isfinite(v))
    snprintf(buf, sizeof bufs[0], "%.3f", v);
  else
    snprintf(buf, sizeof bufs[0], "null");
  return buf;
}

void out_begin(bench_t *b) {
  b->first_mode = true;
  b->txt = b->js = NULL;
  if (b->rank != 0)
    return;
  if (b->o.json) {
    b->js = stdout;
  } else {
    b->txt = stdout;
    if (b->o.json_out && !(b->js = fopen(b->o.json_out, "w")))
      die("--json-out: cannot open the file");
  }
  if (!b->js)
    return;
  char lib[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(lib, &len);
  lib[strcspn(lib, "\n,")] = '\0';
  fprintf(b->js, "{\"tool\": \"evmpi-bench\", \"ranks\": %d, \"cores\": %ld, \"reps\": %d, "
          "\"mpi\": ", b->size, sysconf(_SC_NPROCESSORS_ONLN), b->o.reps);
  json_string(b->js, lib);
  fprintf(b->js, ", \"libevent\": ");
  json_string(b->js, event_get_version());
  fprintf(b->js, ", \"modes\": [\n");
  fflush(b->js);
}

void out_end(bench_t *b) {
  if (b->js) {
    fprintf(b->js, "\n]}\n");
    if (b->js != stdout && fclose(b->js) != 0)
      die("--json-out: cannot write the file");
    else
      fflush(b->js);
  }
  b->js = b->txt = NULL;
}

void out_mode(bench_t *b, const char *op, const char *name, const char *unit,
              const char *row_key, const char *row_label, int ncols, const column_t *cols) {
  b->row_key = row_key;
  b->row_label = row_label;
  b->ncols = ncols;
  b->cols = cols;
  b->first_row = true;
  if (b->js) {
    fprintf(b->js, "%s{\"op\": \"%s\", \"name\": ", b->first_mode ? "" : ",\n", op);
    json_string(b->js, name);
    fprintf(b->js, ", \"ranks\": %d, \"unit\": ", b->size);
    json_string(b->js, unit);
    fprintf(b->js, ", \"row\": \"%s\", \"columns\": [", row_key);
    for (int i = 0; i < ncols; i++) {
      fprintf(b->js, "%s", i ? ", " : "");
      json_string(b->js, cols[i].key);
    }
    fprintf(b->js, "], \"results\": [\n");
    fflush(b->js);
  }
  if (b->txt) {
    fprintf(b->txt, "%s# evmpi-bench %s\n", b->first_mode ? "" : "\n", name);
    fflush(b->txt);
  }
  b->first_mode = false;
}

void out_note(bench_t *b, const char *fmt, ...) {
  if (!b->txt)
    return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(b->txt, "# ");
  vfprintf(b->txt, fmt, ap);
  fprintf(b->txt, "\n");
  va_end(ap);
}

void out_header(bench_t *b) {
  if (!b->txt)
    return;
  char label[32];
  snprintf(label, sizeof label, "# %s", b->row_label);
  fprintf(b->txt, "%-*s", ROW_WIDTH, label);
  for (int i = 0; i < b->ncols; i++)
    fprintf(b->txt, "%*s", FIELD_WIDTH, b->cols[i].label);
  fprintf(b->txt, "\n");
  fflush(b->txt);
}

static void row(bench_t *b, const char *name, size_t first, const double *vals,
                const char *extra) {
  if (b->js) {
    fprintf(b->js, "%s  {\"%s\": ", b->first_row ? "" : ",\n", b->row_key);
    if (name)
      json_string(b->js, name);
    else
      fprintf(b->js, "%zu", first);
    for (int i = 0; i < b->ncols; i++)
      fprintf(b->js, ", \"%s\": %s", b->cols[i].key, jnum(vals[i]));
    if (extra && *extra)
      fprintf(b->js, ", %s", extra);
    fprintf(b->js, "}");
    fflush(b->js);
  }
  if (b->txt) {
    if (name)
      fprintf(b->txt, "%-*s", ROW_WIDTH, name);
    else
      fprintf(b->txt, "%-*zu", ROW_WIDTH, first);
    for (int i = 0; i < b->ncols; i++)
      fprintf(b->txt, "%*.*f", FIELD_WIDTH, FIELD_PREC, vals[i]);
    fprintf(b->txt, "\n");
    fflush(b->txt);
  }
  b->first_row = false;
}

void out_row_size(bench_t *b, size_t first, const double *vals, const char *extra) {
  row(b, NULL, first, vals, extra);
}

void out_row_name(bench_t *b, const char *name, const double *vals, const char *extra) {
  row(b, name, 0, vals, extra);
}

void out_mode_end(bench_t *b, const char *summary, const char *text) {
  if (b->js) {
    fprintf(b->js, "\n]");
    if (summary && *summary)
      fprintf(b->js, ", \"summary\": {%s}", summary);
    fprintf(b->js, "}");
    fflush(b->js);
  }
  if (b->txt && text && *text) {
    const char *s = text;
    while (*s) {
      size_t n = strcspn(s, "\n");
      fprintf(b->txt, "# %.*s\n", (int)n, s);
      s += n;
      if (*s)
        s++;
    }
    fflush(b->txt);
  }
}

/* ---- statistics, time --------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double median(double *v, int n) {
  if (n <= 0)
    return NAN;
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double percentile(double *v, int n, double p) {
  if (n <= 0)
    return NAN;
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  int k = (int)ceil(p / 100.0 * n) - 1; /* nearest rank */
  if (k < 0)
    k = 0;
  if (k >= n)
    k = n - 1;
  return v[k];
}

double vmax(const double *v, int n) {
  double m = n > 0 ? v[0] : NAN;
  for (int i = 1; i < n; i++)
    if (v[i] > m)
      m = v[i];
  return m;
}

void push(samples_t *s, double x) {
  if (s->n == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 1024;
    s->v = realloc(s->v, (size_t)s->cap * sizeof *s->v);
    if (!s->v)
      die("out of memory");
  }
  s->v[s->n++] = x;
}

int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double slowest(double t) {
  double m;
  MPI_Allreduce(&t, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return m;
}

int iters_for(const bench_t *b, size_t bytes) {
  if (b->o.iters > 0)
    return b->o.iters;
  if (bytes <= (64u << 10))
    return 1000;
  size_t n = (64u << 20) / bytes;
  return n < 2 ? 2 : (int)n;
}

size_t sweep_min(const bench_t *b, size_t elem) {
  if (b->o.min_bytes == 0)
    return elem;
  size_t m = b->o.min_bytes;
  return m < elem ? elem : m - m % elem;
}

size_t sweep_max(const bench_t *b, size_t def_max) {
  return b->o.max_bytes ? b->o.max_bytes : def_max;
}

/* ---- waiting ------------------------------------------------------------------------- */

void loop_until(bench_t *b, const bool *done) {
  while (!*done)
    if (event_base_loop(b->base, EVLOOP_ONCE) < 0)
      die("event_base_loop failed");
}

void count_done(evmpi_work_t *w, void *arg) {
  countdown_t *c = arg;
  release_ok(w);
  if (--c->left == 0)
    c->done = true;
}

void release_ok(evmpi_work_t *w) {
  if (!evmpi_work_is_success(w))
    die(evmpi_work_error(w));
  evmpi_work_release(w);
}

void post_recv(bench_t *b, evmpi_tensor_t *t, int src, int tag, evmpi_work_cb cb, void *arg) {
  evmpi_work_t *w;
  check(evmpi_recv(b->pg, t, src, tag, &w));
  check(evmpi_work_on_complete(w, cb, arg));
}

void post_send(bench_t *b, evmpi_tensor_t *t, int dst, int tag, evmpi_work_cb cb, void *arg) {
  evmpi_work_t *w;
  check(evmpi_send(b->pg, t, dst, tag, &w));
  check(evmpi_work_on_complete(w, cb, arg));
}

const column_t latency_cols[4] = {
    {"raw_us", "raw MPI (us)"},
    {"evmpi_us", "evmpi (us)"},
    {"diff_us", "evmpi-raw (us)"},
    {"ratio", "ratio"},
};

void latency_row(bench_t *b, size_t bytes, int iters, double (*raw)(void *ctx, int iters),
                 double (*ev)(void *ctx, int iters), void *ctx) {
  double *rt = xcalloc((size_t)b->o.reps, sizeof *rt);
  double *et = xcalloc((size_t)b->o.reps, sizeof *et);
  raw(ctx, iters / 10 + 1); /* warm-up (and, for evmpi, its buffers) */
  ev(ctx, iters / 10 + 1);
  for (int r = 0; r < b->o.reps; r++) {
    rt[r] = raw(ctx, iters);
    et[r] = ev(ctx, iters);
  }
  double mr = median(rt, b->o.reps), me = median(et, b->o.reps);
  double vals[4] = {mr, me, me - mr, me / mr};
  char extra[128];
  snprintf(extra, sizeof extra, "\"iters\": %d, \"raw_min_us\": %s, \"evmpi_min_us\": %s",
           iters, jnum(rt[0]), jnum(et[0]));
  out_row_size(b, bytes, vals, extra);
  free(rt);
  free(et);
}

typedef struct {
  int (*submit)(void *ctx, evmpi_work_t **work);
  void *ctx;
  int left;
  bool done;
} chain_t;

static void chain_next(chain_t *c);

static void chain_done(evmpi_work_t *w, void *arg) {
  chain_t *c = arg;
  release_ok(w);
  if (--c->left > 0)
    chain_next(c);
  else
    c->done = true;
}

static void chain_next(chain_t *c) {
  evmpi_work_t *w;
  check(c->submit(c->ctx, &w));
  check(evmpi_work_on_complete(w, chain_done, c));
}

double time_chain(bench_t *b, int (*submit)(void *ctx, evmpi_work_t **work), void *ctx,
                  int iters) {
  chain_t c = {submit, ctx, iters, false};
  MPI_Barrier(MPI_COMM_WORLD);
  int64_t t0 = now_ns();
  chain_next(&c);
  loop_until(b, &c.done);
  return slowest((double)(now_ns() - t0) / 1e3 / iters);
}

double time_raw_allreduce(float *buf, int count, int iters) {
  MPI_Barrier(MPI_COMM_WORLD);
  int64_t t0 = now_ns();
  for (int i = 0; i < iters; i++)
    MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  return slowest((double)(now_ns() - t0) / 1e3 / iters);
}

typedef struct {
  bench_t *b;
  evmpi_tensor_t *t;
} allreduce_chain_t;

static int submit_allreduce(void *ctx, evmpi_work_t **w) {
  allreduce_chain_t *c = ctx;
  return evmpi_allreduce(c->b->pg, c->t, EVMPI_SUM, w);
}

double time_evmpi_allreduce(bench_t *b, evmpi_tensor_t *t, int iters) {
  allreduce_chain_t c = {b, t};
  return time_chain(b, submit_allreduce, &c, iters);
}

typedef struct {
  MPI_Request req;
  bool done;
} ibarrier_t;

static void test_barrier(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  ibarrier_t *w = arg;
  int flag = 0;
  MPI_Test(&w->req, &flag, MPI_STATUS_IGNORE);
  w->done = flag != 0;
}

void idle_barrier(bench_t *b) {
  ibarrier_t w = {MPI_REQUEST_NULL, false};
  MPI_Ibarrier(MPI_COMM_WORLD, &w.req);
  int flag = 0;
  MPI_Test(&w.req, &flag, MPI_STATUS_IGNORE);
  if (flag)
    return;
  struct event *ev = event_new(b->base, -1, EV_PERSIST, test_barrier, &w);
  struct timeval tv = {0, 100};
  event_add(ev, &tv);
  loop_until(b, &w.done);
  event_free(ev);
}

void die(const char *what) {
  fprintf(stderr, "evmpi-bench: %s\n", what);
  MPI_Abort(MPI_COMM_WORLD, 1);
  abort();
}

void check(int rc) {
  if (rc != EVMPI_OK)
    die(evmpi_last_error());
}

void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p)
    die("out of memory");
  return p;
}

void *bench_alloc(size_t bytes) {
  void *p = xcalloc(1, bytes);
  memset(p, 0, bytes);
  return p;
}
