/* cuda.c: CUDA device tensors: which path a group takes (straight to a
 * CUDA-aware MPI, staged through host memory, or refused), the checks on a
 * device tensor, and the calling thread's current device. Sends and
 * receives of device tensors are in cuda_p2p.c, collectives are staged in
 * cuda_stage.c. Without CUDA only the configuration is built:
 * every group's path is then EVMPI_CUDA_NONE. */
#include "cuda-internal.h"
#include "mpi_ext-internal.h"
#include "pg-internal.h"
#include "pieces-internal.h"
#include "status-internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef EVMPI_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

/* 4 MiB chunks: big enough that a chunk's MPI call runs at full bandwidth,
 * small enough that its copies overlap most of the transfer. A chunk is a
 * power of two from 16 bytes (the largest element) to 1 GiB, as a piece
 * is (pieces.c): so every element size divides it, and rounded up to a
 * multiple of the largest whole message it stays a multiple of every
 * piece, which a 96-byte chunk with 56-byte pieces was not. */
/* (The default and the range are EVMPI_CUDA_CHUNK's row in options.c.) */

int evmpi__cuda_configure(const char *op, evmpi_pg_t *pg) {
  pg->cuda_path = EVMPI_CUDA_NONE;
  pg->cuda_chunk = (size_t)pg->settings.cuda_chunk;
#ifdef EVMPI_HAVE_CUDA
  /* Parsed and range-checked by options.c's table (EVMPI_CUDA_*). */
  int aware = (int)pg->settings.cuda_aware;
  int staging = (int)pg->settings.cuda_staging;
  /* A chunk is a multiple of the largest whole message (and so of every
   * piece), so that a staged tensor is cut where a host tensor on another
   * rank is (pieces.c). Both are powers of two: this is the larger. */
  size_t unit = evmpi__whole_max_bytes(pg);
  pg->cuda_chunk = (pg->cuda_chunk + unit - 1) / unit * unit;
  if (aware == 2)
    aware = evmpi__mpi_query_cuda_support();
  if (aware)
    pg->cuda_path = EVMPI_CUDA_DIRECT;
  else
    pg->cuda_path = staging ? EVMPI_CUDA_STAGED : EVMPI_CUDA_REFUSED;
#endif
  (void)op;
  return EVMPI_OK;
}

#ifdef EVMPI_HAVE_CUDA

/* The runtime's device count, asked once: it cannot change while the
 * process runs, and asking costs a driver call. */
static pthread_once_t count_once = PTHREAD_ONCE_INIT;
static int device_count;
static cudaError_t device_count_err;

static void count_devices(void) {
  device_count_err = cudaGetDeviceCount(&device_count);
  if (device_count_err != cudaSuccess) {
    device_count = 0;
    cudaGetLastError(); /* not sticky: clear it */
  }
}

int evmpi__cuda_check_tensor(const char *op, const char *arg, const evmpi_tensor_t *t,
                             int64_t numel) {
  pthread_once(&count_once, count_devices);
  int index = t->device.index;
  if (device_count_err != cudaSuccess)
    return evmpi__fail(EVMPI_ERR_CUDA, "%s: %s is on cuda:%d but the CUDA runtime finds no "
                       "device (cudaGetDeviceCount: %s: %s)", op, arg, index,
                       cudaGetErrorName(device_count_err), cudaGetErrorString(device_count_err));
  if (index < 0 || index >= device_count)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s: cuda:%d is not a device of this process (it "
                       "sees %d CUDA device%s)", op, arg, index, device_count,
                       device_count == 1 ? "" : "s");
  if (numel == 0)
    return EVMPI_OK;
  struct cudaPointerAttributes a;
  memset(&a, 0, sizeof a);
  cudaError_t e = cudaPointerGetAttributes(&a, t->data);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s: data %p is not CUDA memory "
                       "(cudaPointerGetAttributes: %s)", op, arg, t->data, cudaGetErrorString(e));
  }
  if (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged) {
    if (a.device != index)
      return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s says cuda:%d but its data is memory of "
                         "cuda:%d", op, arg, index, a.device);
    return EVMPI_OK;
  }
  return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s says cuda:%d but its data is %s host memory "
                     "(give device memory, or device type EVMPI_DEVICE_CPU)", op, arg, index,
                     a.type == cudaMemoryTypeHost ? "pinned" : "ordinary");
}

int evmpi__cuda_current_device(void) {
  int d = -1;
  if (cudaGetDevice(&d) != cudaSuccess) {
    cudaGetLastError(); /* not sticky: clear it */
    return -1;
  }
  return d;
}

void evmpi__cuda_restore_device(int saved, int set) {
  /* Nothing to give back when the device did not change; -1: the
   * runtime could not say what was current, so nothing is imposed. */
  if (saved >= 0 && saved != set)
    cudaSetDevice(saved);
}

bool evmpi__cuda_copy(void *dst, const void *src, size_t bytes, int device, bool to_device,
                      char *why, size_t len) {
  int saved = evmpi__cuda_current_device();
  const char *call = "cudaSetDevice";
  cudaError_t e = cudaSetDevice(device);
  if (e == cudaSuccess) {
    call = to_device ? "cudaMemcpy (host to device)" : "cudaMemcpy (device to host)";
    e = cudaMemcpy(dst, src, bytes, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost);
  }
  evmpi__cuda_restore_device(saved, device);
  if (e == cudaSuccess)
    return true;
  cudaGetLastError(); /* not sticky: clear it */
  snprintf(why, len, "%s of %zu bytes on cuda:%d failed: %s: %s", call, bytes, device,
           cudaGetErrorName(e), cudaGetErrorString(e));
  return false;
}

#endif /* EVMPI_HAVE_CUDA */
