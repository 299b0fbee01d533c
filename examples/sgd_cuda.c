/* sgd_cuda.c: data-parallel SGD whose gradients are averaged in CUDA
 * device memory. Built only with CUDA; needs a GPU per rank to run.
 *
 *   mpirun -np 2 examples/sgd_cuda
 *
 * The model is linear regression on synthetic data, as in sgd.c (which
 * explains the overlap of communication and local work in more detail).
 * Here the gradient lives on the GPU, as it does in a real training job
 * where a kernel writes it: this example computes it on the host and
 * uploads it with cudaMemcpyAsync on its own stream, which stands in for
 * that kernel. Two rules of device tensors show:
 *  - the data must be ready when the operation is submitted: evmpi copies
 *    on streams of its own and does not wait for the application's, so the
 *    stream is synchronised first;
 *  - the tensor names its device (device.type = EVMPI_DEVICE_CUDA,
 *    device.index), and the group moves it straight to a CUDA-aware MPI or
 *    through pinned host memory (evmpi_pg_cuda_path tells which).
 * Each rank exits 1 unless the loss falls below 1e-3 and the weights agree
 * across ranks; 77 (skipped) where there is no CUDA device. */
#include <cuda_runtime_api.h>
#include <event2/event.h>
#include <evmpi.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

enum { DIM = 8, SHARD = 256, BATCH = 32, STEPS = 60 };
#define LEARNING_RATE 0.5f

struct job {
  struct event_base *base;
  evmpi_pg_t *pg;
  int rank, size, step, failed;
  int dev;              /* this rank's GPU */
  uint64_t rng;
  float x[SHARD][DIM], y[SHARD], w[DIM], w_true[DIM];
  float grad[DIM + 1];  /* host side: gradient + this shard's loss */
  float *d_grad;        /* the same on the device: what evmpi averages */
  cudaStream_t stream;  /* the application's stream (a kernel's, in real life) */
  double loss;
};

static double uniform(uint64_t *s) { /* splitmix64 in [0, 1) */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return ((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

static int cuda_ok(struct job *j, cudaError_t e, const char *what) {
  if (e == cudaSuccess)
    return 1;
  fprintf(stderr, "rank %d: %s: %s\n", j->rank, what, cudaGetErrorString(e));
  j->failed = 1;
  event_base_loopbreak(j->base);
  return 0;
}

static void start_step(struct job *j);

/* The averaged gradient is on the device: bring it back and step. */
static void on_average(evmpi_work_t *work, void *arg) {
  struct job *j = arg;
  if (!evmpi_work_is_success(work)) {
    fprintf(stderr, "rank %d: allreduce: %s\n", j->rank, evmpi_work_error(work));
    j->failed = 1;
    evmpi_work_release(work);
    event_base_loopbreak(j->base);
    return;
  }
  evmpi_work_release(work);
  if (!cuda_ok(j, cudaMemcpy(j->grad, j->d_grad, sizeof j->grad, cudaMemcpyDeviceToHost),
               "cudaMemcpy"))
    return;
  for (int k = 0; k < DIM; k++)
    j->w[k] -= LEARNING_RATE * j->grad[k];
  j->loss = j->grad[DIM];
  if (j->rank == 0 && j->step % 10 == 0)
    printf("step %2d: loss %.6f\n", j->step, j->loss);
  if (++j->step < STEPS)
    start_step(j);
  else
    event_base_loopbreak(j->base);
}

static void start_step(struct job *j) {
  double g[DIM] = {0}, loss = 0;
  int first = (j->step * BATCH) % SHARD;
  for (int b = 0; b < BATCH; b++) {
    const float *x = j->x[first + b];
    double r = -j->y[first + b];
    for (int k = 0; k < DIM; k++)
      r += j->w[k] * x[k];
    loss += 0.5 * r * r / BATCH;
    for (int k = 0; k < DIM; k++)
      g[k] += r * x[k] / BATCH;
  }
  for (int k = 0; k < DIM; k++)
    j->grad[k] = (float)g[k];
  j->grad[DIM] = (float)loss;
  /* "The kernel": the gradient reaches device memory on our stream. */
  if (!cuda_ok(j, cudaMemcpyAsync(j->d_grad, j->grad, sizeof j->grad, cudaMemcpyHostToDevice,
                                  j->stream), "cudaMemcpyAsync") ||
      !cuda_ok(j, cudaStreamSynchronize(j->stream), "cudaStreamSynchronize"))
    return;
  evmpi_tensor_t t = evmpi_tensor_flat(j->d_grad, EVMPI_FLOAT32, DIM + 1);
  t.device.type = EVMPI_DEVICE_CUDA;
  t.device.index = j->dev;
  evmpi_work_t *work = NULL;
  if (evmpi_allreduce(j->pg, &t, EVMPI_AVG, &work) != EVMPI_OK) {
    fprintf(stderr, "rank %d: evmpi_allreduce: %s\n", j->rank, evmpi_last_error());
    j->failed = 1;
    event_base_loopbreak(j->base);
    return;
  }
  evmpi_work_on_complete(work, on_average, j);
}

int main(void) {
  static struct job j;
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("sgd_cuda: no CUDA device here: skipped\n");
    return 77;
  }
  j.base = event_base_new();
  if (evmpi_pg_create(j.base, NULL, 0, &j.pg) != EVMPI_OK) {
    fprintf(stderr, "evmpi_pg_create: %s\n", evmpi_last_error());
    return 1;
  }
  j.rank = evmpi_pg_rank(j.pg);
  j.size = evmpi_pg_size(j.pg);
  int dev = j.dev = j.rank % ndev; /* one GPU per rank where there are several */
  cudaSetDevice(dev);
  if (cudaMalloc((void **)&j.d_grad, sizeof j.grad) != cudaSuccess ||
      cudaStreamCreate(&j.stream) != cudaSuccess) {
    fprintf(stderr, "rank %d: cannot set up cuda:%d\n", j.rank, dev);
    return 1;
  }
  if (j.rank == 0)
    printf("sgd_cuda: %d ranks, gradients on cuda:%d, %s\n", j.size, dev,
           evmpi_pg_cuda_path(j.pg) == EVMPI_CUDA_DIRECT ? "straight to a CUDA-aware MPI"
                                                          : "staged through pinned host memory");
  uint64_t shared = 7;
  for (int k = 0; k < DIM; k++)
    j.w_true[k] = (float)(2 * uniform(&shared) - 1);
  j.rng = 1000 + (uint64_t)j.rank;
  for (int i = 0; i < SHARD; i++) {
    double dot = 0;
    for (int k = 0; k < DIM; k++)
      dot += j.w_true[k] * (j.x[i][k] = (float)(2 * uniform(&j.rng) - 1));
    j.y[i] = (float)dot;
  }
  start_step(&j);
  event_base_dispatch(j.base);

  /* The weights must agree everywhere: compare with rank 0's. */
  float w0[DIM];
  for (int k = 0; k < DIM; k++)
    w0[k] = j.w[k];
  evmpi_tensor_t t = evmpi_tensor_flat(w0, EVMPI_FLOAT32, DIM);
  evmpi_work_t *work = NULL;
  int agree = 0;
  if (!j.failed && evmpi_broadcast(j.pg, &t, 0, &work) == EVMPI_OK &&
      evmpi_work_wait(work, -1) == EVMPI_OK) {
    agree = 1;
    for (int k = 0; k < DIM; k++)
      agree &= w0[k] == j.w[k];
  }
  evmpi_work_release(work);
  int ok = !j.failed && j.loss < 1e-3 && agree;
  if (j.rank == 0)
    printf("sgd_cuda: final loss %.6f, weights %s: %s\n", j.loss, agree ? "agree" : "differ",
           ok ? "ok" : "FAILED");
  cudaFree(j.d_grad);
  cudaStreamDestroy(j.stream);
  evmpi_pg_destroy(j.pg);
  event_base_free(j.base);
  return ok ? 0 : 1;
}
