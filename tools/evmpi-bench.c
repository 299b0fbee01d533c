/* evmpi-bench: evmpi against raw MPI, measured in the same run.
 *
 *   mpirun -np 2 tools/evmpi-bench [--op allreduce|coalesced] [--min BYTES] [--max BYTES]
 *                                  [--iters N] [--reps R] [--tensors T] [--json]
 *
 * For each message size, R repetitions of N back-to-back operations, timed
 * as a whole, for raw blocking MPI (MPI_Allreduce on the calling thread)
 * and for evmpi (submit, then the completion callback on the libevent loop
 * submits the next one). Reported: the median over repetitions of the mean
 * time per operation, in microseconds, and the ratio evmpi / raw. Rank 0
 * prints; every rank takes part.
 *
 * --op coalesced: T tensors of each size reduced three ways: raw MPI (one
 * MPI_Allreduce per tensor), evmpi with one allreduce work per tensor (all
 * queued at once), and one evmpi_allreduce_coalesced work; microseconds
 * for the whole set. */
#include <event2/event.h>
#include <evmpi.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *op;
  size_t min_bytes, max_bytes;
  int iters, reps, tensors;
  bool json;
} options_t;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- raw MPI ---------------------------------------------------------- */

static double raw_allreduce(float *buf, int count, int iters) {
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = MPI_Wtime();
  for (int i = 0; i < iters; i++)
    MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  return (MPI_Wtime() - t0) / iters;
}

/* ---- evmpi: a chain of submissions driven by callbacks --------------------- */

typedef struct {
  evmpi_pg_t *pg;
  struct event_base *base;
  evmpi_tensor_t tensor;
  int left;
  int failed;
} chain_t;

static void submit_next(chain_t *c);

static void on_done(evmpi_work_t *w, void *arg) {
  chain_t *c = arg;
  if (!evmpi_work_is_success(w)) {
    fprintf(stderr, "evmpi-bench: %s\n", evmpi_work_error(w));
    c->failed = 1;
  }
  evmpi_work_release(w);
  if (--c->left > 0 && !c->failed)
    submit_next(c);
  else
    event_base_loopbreak(c->base);
}

static void submit_next(chain_t *c) {
  evmpi_work_t *w;
  if (evmpi_allreduce(c->pg, &c->tensor, EVMPI_SUM, &w) != EVMPI_OK ||
      evmpi_work_on_complete(w, on_done, c) != EVMPI_OK) {
    fprintf(stderr, "evmpi-bench: %s\n", evmpi_last_error());
    c->failed = 1;
    event_base_loopbreak(c->base);
  }
}

static double evmpi_allreduce_chain(chain_t *c, int iters) {
  c->left = iters;
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = MPI_Wtime();
  submit_next(c);
  event_base_dispatch(c->base);
  return (MPI_Wtime() - t0) / iters;
}

/* ---- coalesced: T tensors, three ways -------------------------------------- */

typedef struct {
  struct event_base *base;
  int left;
} countdown_t;

static void count_done(evmpi_work_t *w, void *arg) {
  countdown_t *c = arg;
  if (!evmpi_work_is_success(w)) {
    fprintf(stderr, "evmpi-bench: %s\n", evmpi_work_error(w));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  evmpi_work_release(w);
  if (--c->left == 0)
    event_base_loopbreak(c->base);
}

static void submit_or_die(int rc) {
  if (rc != EVMPI_OK) {
    fprintf(stderr, "evmpi-bench: %s\n", evmpi_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
}

/* mode 0: raw, 1: one work per tensor, 2: one coalesced work. */
static double coalesced_round(chain_t *c, evmpi_tensor_t *ts, int n, int mode) {
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = MPI_Wtime();
  if (mode == 0) {
    for (int i = 0; i < n; i++)
      MPI_Allreduce(MPI_IN_PLACE, ts[i].data, (int)ts[i].shape[0], MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
    return MPI_Wtime() - t0;
  }
  countdown_t cd = {c->base, mode == 1 ? n : 1};
  evmpi_work_t *w;
  if (mode == 1) {
    for (int i = 0; i < n; i++) {
      submit_or_die(evmpi_allreduce(c->pg, &ts[i], EVMPI_SUM, &w));
      submit_or_die(evmpi_work_on_complete(w, count_done, &cd));
    }
  } else {
    submit_or_die(evmpi_allreduce_coalesced(c->pg, ts, (size_t)n, EVMPI_SUM, &w));
    submit_or_die(evmpi_work_on_complete(w, count_done, &cd));
  }
  event_base_dispatch(c->base);
  return MPI_Wtime() - t0;
}

static void bench_coalesced(chain_t *c, const options_t *o, int rank, int size) {
  int n = o->tensors;
  float *buf = calloc(o->max_bytes / 4 * (size_t)n + 1, 4);
  evmpi_tensor_t *ts = calloc((size_t)n, sizeof *ts);
  double *t[3];
  for (int m = 0; m < 3; m++)
    t[m] = calloc((size_t)o->reps, sizeof **t);
  if (rank == 0 && !o->json)
    printf("# evmpi-bench coalesced, %d ranks, %d float32 tensors of each size: median of %d "
           "repetitions, us per set\n%-10s %16s %16s %16s %12s\n", size, n, o->reps, "# Size",
           "raw MPI", "evmpi each", "evmpi coalesced", "coal./each");
  if (rank == 0 && o->json)
    printf("{\"op\": \"coalesced\", \"ranks\": %d, \"tensors\": %d, \"unit\": \"us\", "
           "\"results\": [\n", size, n);
  for (size_t bytes = o->min_bytes; bytes <= o->max_bytes; bytes *= 2) {
    int count = (int)(bytes / 4);
    for (int i = 0; i < n; i++)
      ts[i] = evmpi_tensor_flat(buf + (size_t)i * (size_t)count, EVMPI_FLOAT32, count);
    for (int m = 0; m < 3; m++)
      coalesced_round(c, ts, n, m); /* warm-up */
    for (int r = 0; r < o->reps; r++)
      for (int m = 0; m < 3; m++)
        t[m][r] = coalesced_round(c, ts, n, m) * 1e6;
    double md[3];
    for (int m = 0; m < 3; m++)
      md[m] = median(t[m], o->reps);
    if (rank == 0) {
      if (o->json)
        printf("%s  {\"bytes\": %zu, \"raw_us\": %.3f, \"each_us\": %.3f, \"coalesced_us\": "
               "%.3f}", bytes == o->min_bytes ? "" : ",\n", bytes, md[0], md[1], md[2]);
      else
        printf("%-10zu %16.2f %16.2f %16.2f %12.2f\n", bytes, md[0], md[1], md[2], md[2] / md[1]);
      fflush(stdout);
    }
  }
  if (rank == 0 && o->json)
    printf("\n]}\n");
  for (int m = 0; m < 3; m++)
    free(t[m]);
  free(ts);
  free(buf);
}

/* ---- driver ------------------------------------------------------------- */

static void usage(void) {
  fprintf(stderr, "usage: evmpi-bench [--op allreduce|coalesced] [--min BYTES] [--max BYTES] "
                  "[--iters N] [--reps R] [--tensors T] [--json]\n");
}

static int parse(int argc, char **argv, options_t *o) {
  static const struct option longopts[] = {
      {"op", required_argument, NULL, 'o'},   {"min", required_argument, NULL, 'm'},
      {"max", required_argument, NULL, 'M'},  {"iters", required_argument, NULL, 'i'},
      {"reps", required_argument, NULL, 'r'}, {"json", no_argument, NULL, 'j'},
      {"tensors", required_argument, NULL, 't'},
      {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
  };
  *o = (options_t){"allreduce", 4, 16u << 20, 0, 7, 64, false};
  int ch;
  while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (ch) {
    case 'o': o->op = optarg; break;
    case 'm': o->min_bytes = strtoull(optarg, NULL, 0); break;
    case 'M': o->max_bytes = strtoull(optarg, NULL, 0); break;
    case 'i': o->iters = atoi(optarg); break;
    case 'r': o->reps = atoi(optarg); break;
    case 'j': o->json = true; break;
    case 't': o->tensors = atoi(optarg); break;
    default: usage(); return -1;
    }
  }
  if (strcmp(o->op, "allreduce") != 0 && strcmp(o->op, "coalesced") != 0) {
    fprintf(stderr, "evmpi-bench: unknown --op %s (allreduce, coalesced)\n", o->op);
    return -1;
  }
  if (o->min_bytes < 4 || o->max_bytes < o->min_bytes || o->reps < 1 || o->iters < 0 ||
      o->tensors < 1) {
    usage();
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  int provided;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  options_t o;
  if (parse(argc, argv, &o) != 0) {
    MPI_Finalize();
    return 2;
  }
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  chain_t c = {0};
  c.base = event_base_new();
  if (evmpi_pg_create(c.base, NULL, 0, &c.pg) != EVMPI_OK) {
    fprintf(stderr, "evmpi-bench: %s\n", evmpi_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  if (strcmp(o.op, "coalesced") == 0) {
    bench_coalesced(&c, &o, rank, size);
    evmpi_pg_destroy(c.pg);
    event_base_free(c.base);
    MPI_Finalize();
    return 0;
  }
  float *buf = calloc(o.max_bytes / 4 + 1, 4);
  double *raw = calloc((size_t)o.reps, sizeof *raw), *ev = calloc((size_t)o.reps, sizeof *ev);
  if (rank == 0) {
    if (o.json)
      printf("{\"op\": \"%s\", \"ranks\": %d, \"unit\": \"us\", \"results\": [\n", o.op, size);
    else
      printf("# evmpi-bench %s, %d ranks: median of %d repetitions, us per operation\n"
             "%-10s %20s %20s %10s\n", o.op, size, o.reps, "# Size", "raw MPI (us)",
             "evmpi (us)", "ratio");
  }
  bool first = true;
  for (size_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 2) {
    int count = (int)(bytes / 4);
    int iters = o.iters ? o.iters : (bytes <= 65536 ? 1000 : bytes <= (1u << 20) ? 100 : 20);
    c.tensor = evmpi_tensor_flat(buf, EVMPI_FLOAT32, count);
    raw_allreduce(buf, count, iters / 10 + 1); /* warm-up */
    evmpi_allreduce_chain(&c, iters / 10 + 1);
    for (int r = 0; r < o.reps; r++) {
      /* Alternate so that drift in the machine's load hits both alike. */
      raw[r] = raw_allreduce(buf, count, iters) * 1e6;
      ev[r] = evmpi_allreduce_chain(&c, iters) * 1e6;
    }
    if (c.failed)
      MPI_Abort(MPI_COMM_WORLD, 1);
    double mr = median(raw, o.reps), me = median(ev, o.reps);
    if (rank == 0) {
      if (o.json)
        printf("%s  {\"bytes\": %zu, \"iters\": %d, \"raw_us\": %.3f, \"evmpi_us\": %.3f, "
               "\"ratio\": %.3f}", first ? "" : ",\n", bytes, iters, mr, me, me / mr);
      else
        printf("%-10zu %20.2f %20.2f %10.2f\n", bytes, mr, me, me / mr);
      fflush(stdout);
    }
    first = false;
  }
  if (rank == 0 && o.json)
    printf("\n]}\n");
  evmpi_pg_destroy(c.pg);
  event_base_free(c.base);
  free(buf);
  free(raw);
  free(ev);
  MPI_Finalize();
  return 0;
}
