/* bench_cuda.c: the device mode (--op cuda): allreduce of float32 in CUDA
 * device memory, raw MPI against evmpi in the same run, as bench_coll.c
 * does for host memory. Built with CUDA; not in the default set, since it
 * needs a GPU (without one it says so and measures nothing).
 *
 * raw is what an application would write without evmpi: with a CUDA-aware
 * MPI, MPI_Allreduce on the device pointer; otherwise cudaMemcpy to a
 * pinned host buffer, MPI_Allreduce in place, cudaMemcpy back. evmpi is
 * evmpi_allreduce on the device tensor, submit to callback, on whichever
 * path the group takes (evmpi_pg_cuda_path: direct, or staged in
 * pipelined chunks). */
#include "bench.h"

#include <cuda_runtime_api.h>
#include <limits.h>
#include <stdlib.h>

typedef struct {
  bench_t *b;
  bool aware;
  float *dev, *host;
  int count;
  evmpi_tensor_t t;
} cuda_run_t;

static void cuda_check(cudaError_t e, const char *what) {
  if (e != cudaSuccess) {
    fprintf(stderr, "evmpi-bench: %s: %s\n", what, cudaGetErrorString(e));
    die("CUDA call failed");
  }
}

static double time_raw(void *ctx, int iters) {
  cuda_run_t *c = ctx;
  size_t bytes = (size_t)c->count * sizeof(float);
  MPI_Barrier(MPI_COMM_WORLD);
  int64_t t0 = now_ns();
  for (int i = 0; i < iters; i++) {
    if (c->aware) {
      MPI_Allreduce(MPI_IN_PLACE, c->dev, c->count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      continue;
    }
    cuda_check(cudaMemcpy(c->host, c->dev, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
    MPI_Allreduce(MPI_IN_PLACE, c->host, c->count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    cuda_check(cudaMemcpy(c->dev, c->host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  return slowest((double)(now_ns() - t0) / 1e3 / iters);
}

static double time_evmpi(void *ctx, int iters) {
  cuda_run_t *c = ctx;
  return time_evmpi_allreduce(c->b, &c->t, iters);
}

void mode_cuda(bench_t *b) {
  out_mode(b, "cuda", "Allreduce on CUDA device memory", "us", "bytes", "Size", 4, latency_cols);
  int ndev = 0;
  int have = cudaGetDeviceCount(&ndev) == cudaSuccess && ndev > 0;
  int everywhere = 0;
  MPI_Allreduce(&have, &everywhere, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!everywhere) {
    out_note(b, "no CUDA device on every rank: nothing measured");
    out_header(b);
    out_mode_end(b, "\"skipped\": \"no CUDA device\"", NULL);
    return;
  }
  int device = b->rank % ndev;
  cuda_check(cudaSetDevice(device), "cudaSetDevice");
  cuda_run_t c = {.b = b, .aware = evmpi_pg_cuda_path(b->pg) == EVMPI_CUDA_DIRECT};
  size_t lo = sweep_min(b, sizeof(float)), hi = sweep_max(b, 64u << 20);
  if (hi / sizeof(float) > INT_MAX)
    die("--max: more elements than an int counts");
  cuda_check(cudaMalloc((void **)&c.dev, hi), "cudaMalloc");
  cuda_check(cudaMemset(c.dev, 0, hi), "cudaMemset");
  cuda_check(cudaHostAlloc((void **)&c.host, hi, cudaHostAllocDefault), "cudaHostAlloc");
  out_note(b, "%d ranks, in-place float32 sum on cuda:%d (rank 0); raw: %s; evmpi: %s, submit "
           "to callback", b->size, device,
           c.aware ? "MPI_Allreduce on the device pointer" :
                     "cudaMemcpy to pinned memory, MPI_Allreduce, cudaMemcpy back",
           c.aware ? "device pointers to the CUDA-aware MPI" : "staged in pipelined chunks");
  out_note(b, "median of %d repetitions (the slowest rank's time), us per operation", b->o.reps);
  out_header(b);
  for (size_t bytes = lo; bytes <= hi; bytes *= 2) {
    c.count = (int)(bytes / sizeof(float));
    c.t = evmpi_tensor_flat(c.dev, EVMPI_FLOAT32, c.count);
    c.t.device.type = EVMPI_DEVICE_CUDA;
    c.t.device.index = device;
    latency_row(b, bytes, iters_for(b, bytes), time_raw, time_evmpi, &c);
  }
  out_mode_end(b, NULL, NULL);
  cudaFree(c.dev);
  cudaFreeHost(c.host);
}
