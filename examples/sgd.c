/* sgd.c: data-parallel stochastic gradient descent, with the gradient
 * averaging overlapped with local work.
 *
 *   mpirun -np 4 examples/sgd
 *
 * The model is linear regression, y = w . x + noise, on synthetic data:
 * every rank makes the same true weights from one fixed seed and its own
 * shard of samples from a seed of its own (so the run is reproducible).
 * Each step, every rank computes the gradient of the mean squared error on
 * a mini-batch of its shard and the ranks average the gradients with
 * evmpi_allreduce(EVMPI_AVG) on float32; every rank then applies the same
 * update, so the weights stay identical everywhere.
 *
 * Overlap: the allreduce runs on evmpi's worker thread, so after submitting
 * it the loop thread goes on with work that does not need its result:
 * it computes the loss of the current weights on the whole shard (for the
 * report) and gathers the next mini-batch. The update then happens in the
 * allreduce's callback, which starts the next step. The loss computed
 * during step k rides along in step k + 1's allreduce (one extra float), so
 * reporting the global loss costs no collective of its own.
 *
 * Rank 0 prints the loss every REPORT_EVERY steps. At the end the ranks
 * check that they all hold the same weights (an allreduce MAX of w and -w)
 * and each rank exits 1 unless the final loss (averaged over all ranks) is
 * below LOSS_THRESHOLD and a hundredth of the first loss, the weights agree
 * across ranks and they are within WEIGHT_TOLERANCE of the true ones. */
#include <event2/event.h>
#include <evmpi.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "example.h"

enum {
  DIM = 16,          /* features */
  SHARD = 512,       /* samples per rank */
  BATCH = 32,        /* mini-batch per rank and step */
  STEPS = 60,
  REPORT_EVERY = 5,
  TIMEOUT_S = 60,
};
#define LEARNING_RATE 0.5f
#define NOISE 0.01f
#define LOSS_THRESHOLD 1e-3
#define WEIGHT_TOLERANCE 0.01 /* how close w must come to the true weights */

/* ---- data ------------------------------------------------------------------ */

/* splitmix64: a tiny generator that gives the same numbers everywhere. */
static uint64_t next_u64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static double uniform(uint64_t *s) { return (next_u64(s) >> 11) * 0x1.0p-53; } /* [0, 1) */
static double normal(uint64_t *s) { /* Box-Muller */
  double u = uniform(s), v = uniform(s);
  return sqrt(-2.0 * log(1.0 - u)) * cos(2.0 * M_PI * v);
}

struct sgd {
  struct event_base *base;
  evmpi_pg_t *pg;
  int rank, size;
  uint64_t rng;                       /* this rank's: data and shuffles */
  float x[SHARD][DIM], y[SHARD];      /* this rank's shard */
  int order[SHARD];                   /* shuffled sample order of the epoch */
  float bx[2][BATCH][DIM], by[2][BATCH]; /* current and next mini-batch */
  int cur;                            /* which of the two is current */
  float w[DIM];                       /* the model, the same on every rank */
  float w_true[DIM];                  /* what it should learn */
  float comm[DIM + 1];                /* gradient + previous loss, being averaged */
  float extremes[2 * DIM];            /* at the end: max of w and of -w over the ranks */
  float shard_loss;                   /* loss of w on this shard, computed during a step */
  int step;
  double first_loss, last_loss;
  double spread, error;               /* at the end: weights across ranks, and against w_true */
  int overlapped;                     /* steps whose allreduce outlasted the local work */
  int failed;
};

static void make_data(struct sgd *s) {
  uint64_t shared = 42; /* the same true weights on every rank */
  float *w_true = s->w_true;
  for (int j = 0; j < DIM; j++)
    w_true[j] = (float)normal(&shared);
  for (int i = 0; i < SHARD; i++) {
    double dot = 0;
    for (int j = 0; j < DIM; j++) {
      s->x[i][j] = (float)(2 * uniform(&s->rng) - 1);
      dot += w_true[j] * s->x[i][j];
    }
    s->y[i] = (float)(dot + NOISE * normal(&s->rng));
    s->order[i] = i;
  }
}

/* 0.5 * mean((w . x - y)^2) over n samples. */
static double loss_of(const float *w, const float (*x)[DIM], const float *y, int n) {
  double sum = 0;
  for (int i = 0; i < n; i++) {
    double r = -y[i];
    for (int j = 0; j < DIM; j++)
      r += w[j] * x[i][j];
    sum += r * r;
  }
  return 0.5 * sum / n;
}

/* Copies mini-batch number `step` of the epoch into buffer `slot`,
 * reshuffling the shard at the start of every epoch. */
static void prepare_batch(struct sgd *s, int step, int slot) {
  int per_epoch = SHARD / BATCH, first = (step % per_epoch) * BATCH;
  if (first == 0)
    for (int i = SHARD - 1; i > 0; i--) { /* Fisher-Yates */
      int k = (int)(next_u64(&s->rng) % (uint64_t)(i + 1)), t = s->order[i];
      s->order[i] = s->order[k];
      s->order[k] = t;
    }
  for (int b = 0; b < BATCH; b++) {
    int i = s->order[first + b];
    memcpy(s->bx[slot][b], s->x[i], sizeof s->x[i]);
    s->by[slot][b] = s->y[i];
  }
}

/* ---- the training loop, one callback per step ------------------------------ */

static void start_step(struct sgd *s);
static void finish(struct sgd *s);

static void fail(struct sgd *s, const char *what, const char *why) {
  fprintf(stderr, "rank %d: step %d: %s: %s\n", s->rank, s->step, what, why);
  s->failed = 1;
  event_base_loopbreak(s->base);
}

/* Runs when the gradients of step s->step have been averaged. */
static void on_gradients(evmpi_work_t *work, void *arg) {
  struct sgd *s = arg;
  if (!evmpi_work_is_success(work)) {
    fail(s, "allreduce", evmpi_work_error(work));
    evmpi_work_release(work);
    return;
  }
  evmpi_work_release(work);
  for (int j = 0; j < DIM; j++)
    s->w[j] -= LEARNING_RATE * s->comm[j];
  if (s->step > 0) {
    /* comm[DIM] is the global loss of the weights before the previous
     * update, computed during the previous step. */
    s->last_loss = s->comm[DIM];
    if (s->step == 1)
      s->first_loss = s->last_loss;
    if (s->rank == 0 && (s->step - 1) % REPORT_EVERY == 0)
      printf("step %3d: loss %.6f\n", s->step - 1, s->last_loss);
  }
  s->step++;
  s->cur ^= 1; /* the batch prepared during the allreduce */
  if (s->step < STEPS)
    start_step(s);
  else
    finish(s);
}

static void start_step(struct sgd *s) {
  /* The gradient of 0.5 * mean((w . x - y)^2) on the current batch. */
  float (*x)[DIM] = s->bx[s->cur];
  const float *y = s->by[s->cur];
  double g[DIM] = {0};
  for (int b = 0; b < BATCH; b++) {
    double r = -y[b];
    for (int j = 0; j < DIM; j++)
      r += s->w[j] * x[b][j];
    for (int j = 0; j < DIM; j++)
      g[j] += r * x[b][j];
  }
  for (int j = 0; j < DIM; j++)
    s->comm[j] = (float)(g[j] / BATCH);
  s->comm[DIM] = s->shard_loss; /* from the previous step (0 at step 0, unused) */

  /* comm belongs to the allreduce until on_gradients runs: hands off. */
  evmpi_tensor_t t = evmpi_tensor_flat(s->comm, EVMPI_FLOAT32, DIM + 1);
  evmpi_work_t *work = NULL;
  if (evmpi_allreduce(s->pg, &t, EVMPI_AVG, &work) != EVMPI_OK) {
    fail(s, "evmpi_allreduce", evmpi_last_error());
    return;
  }

  /* While the gradients travel: the loss of the current weights on the
   * whole shard (reported in the next step), and the next mini-batch. */
  s->shard_loss = (float)loss_of(s->w, (const float(*)[DIM])s->x, s->y, SHARD);
  prepare_batch(s, s->step + 1, s->cur ^ 1);
  if (!evmpi_work_is_completed(work))
    s->overlapped++;

  evmpi_work_on_complete(work, on_gradients, s);
}

/* After the last step, two more collectives, joined into one future: the
 * final loss averaged over the ranks, and the largest w and -w over the
 * ranks, which show whether every rank ended with the same weights. */
static void on_final(evmpi_future_t *all, void *arg) {
  struct sgd *s = arg;
  if (evmpi_future_status(all) != EVMPI_OK) {
    fail(s, "final collectives", evmpi_future_error(all));
  } else {
    s->last_loss = s->comm[0];
    for (int j = 0; j < DIM; j++) {
      double spread = (double)s->extremes[j] + s->extremes[DIM + j]; /* max - min */
      double error = fabs((double)s->w[j] - s->w_true[j]);
      s->spread = spread > s->spread ? spread : s->spread;
      s->error = error > s->error ? error : s->error;
    }
  }
  evmpi_future_release(all);
  event_base_loopbreak(s->base);
}

static void finish(struct sgd *s) {
  s->comm[0] = (float)loss_of(s->w, (const float(*)[DIM])s->x, s->y, SHARD);
  for (int j = 0; j < DIM; j++) {
    s->extremes[j] = s->w[j];
    s->extremes[DIM + j] = -s->w[j];
  }
  evmpi_tensor_t loss = evmpi_tensor_flat(s->comm, EVMPI_FLOAT32, 1);
  evmpi_tensor_t ext = evmpi_tensor_flat(s->extremes, EVMPI_FLOAT32, 2 * DIM);
  evmpi_work_t *w1 = NULL, *w2 = NULL;
  if (evmpi_allreduce(s->pg, &loss, EVMPI_AVG, &w1) != EVMPI_OK ||
      evmpi_allreduce(s->pg, &ext, EVMPI_MAX, &w2) != EVMPI_OK) {
    fail(s, "evmpi_allreduce", evmpi_last_error());
    return;
  }
  evmpi_future_t *parts[2] = {evmpi_work_get_future(w1), evmpi_work_get_future(w2)};
  evmpi_future_t *all = NULL;
  if (evmpi_future_all(parts, 2, &all) != EVMPI_OK || evmpi_future_then(all, on_final, s) != EVMPI_OK) {
    fail(s, "evmpi_future_all", evmpi_last_error());
    return;
  }
  evmpi_work_release(w1); /* the join holds the futures it needs */
  evmpi_work_release(w2);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg) {
  struct sgd *s = arg;
  fail(s, "timeout", "no progress for too long");
}

int main(void) {
  struct sgd *s = calloc(1, sizeof *s);
  if (!s)
    return 1;
  s->base = event_base_new();
  if (example_create_on(s->base, &s->pg))
    return 1;
  s->rank = evmpi_pg_rank(s->pg);
  s->size = evmpi_pg_size(s->pg);
  s->rng = 1000 + (uint64_t)s->rank;
  make_data(s);
  if (s->rank == 0)
    printf("sgd: %d rank(s), %d features, %d samples per rank, batch %d per rank, %d steps\n",
           s->size, DIM, SHARD, BATCH, STEPS);

  struct timeval limit = {TIMEOUT_S, 0};
  struct event *timer = evtimer_new(s->base, on_timeout, s);
  evtimer_add(timer, &limit);

  prepare_batch(s, 0, s->cur);
  start_step(s);
  if (!s->failed)
    event_base_dispatch(s->base); /* until on_final_loss or a failure */

  /* Every rank gets the same values from the collectives, so every rank
   * reaches the same verdict. */
  int ok = !s->failed && s->last_loss < LOSS_THRESHOLD && s->last_loss < s->first_loss / 100 &&
           s->spread <= 1e-6 && s->error < WEIGHT_TOLERANCE;
  if (s->rank == 0) {
    printf("final loss %.6f (first %.6f, threshold %g); weights differ across ranks by %g, "
           "from the true weights by %.4f: %s\n", s->last_loss, s->first_loss, LOSS_THRESHOLD,
           s->spread, s->error, ok ? "ok" : "FAILED");
    printf("overlap: the allreduce was still running after the local work in %d of %d steps\n",
           s->overlapped, STEPS);
  }
  fflush(stdout);
  event_free(timer);
  evmpi_pg_destroy(s->pg);
  event_base_free(s->base);
  free(s);
  return ok ? 0 : 1;
}
