/* cuda_p2p.c: sends and receives of CUDA device tensors: the buffer MPI is
 * given (the device pointer on the direct path, a pinned host copy on the
 * staged one), with the tensor's device current meanwhile, and the copy of
 * an arrived message back to the device when the receive finishes. Built
 * with CUDA only. */
#include "cuda_p2p-internal.h"
#include "cuda-internal.h"
#include "pg-internal.h"
#include "status-internal.h"
#include "work-internal.h"

#include <stdint.h>

#include <cuda_runtime_api.h>

static int p2p_cuda_fail(evmpi_work_t *w, const char *call, cudaError_t e) {
  cudaGetLastError();
  return evmpi__fail(EVMPI_ERR_CUDA, "%s: %s failed: %s: %s", w->op->opname, call,
                     cudaGetErrorName(e), cudaGetErrorString(e));
}

static size_t tensor_bytes(const evmpi_work_t *w) {
  return (size_t)w->numel * evmpi_dtype_size(w->tensors[0].dtype);
}

int evmpi__cuda_p2p_enter(evmpi_work_t *w, void **buf, int *saved_device) {
  const evmpi_tensor_t *t = &w->tensors[0];
  *buf = t->data;
  /* As PyTorch's ProcessGroupMPI's DeviceGuard: the tensor's device is current on this
   * (the caller's) thread while MPI sees the buffer, and the caller's own
   * current device is given back afterwards. */
  *saved_device = evmpi__cuda_current_device();
  cudaError_t e = cudaSetDevice(w->device.index);
  if (e != cudaSuccess) {
    int rc = p2p_cuda_fail(w, "cudaSetDevice", e);
    evmpi__cuda_p2p_leave(*saved_device);
    return rc;
  }
  size_t bytes = tensor_bytes(w);
  if (w->pg->cuda_path == EVMPI_CUDA_DIRECT || bytes == 0)
    return EVMPI_OK;
  void *host = NULL;
  e = cudaHostAlloc(&host, bytes, cudaHostAllocPortable);
  if (e != cudaSuccess) {
    int rc = p2p_cuda_fail(w, "cudaHostAlloc", e);
    evmpi__cuda_p2p_leave(*saved_device);
    return rc;
  }
  if (w->kind == EVMPI_WORK_SEND) {
    /* Copied now, so the caller may reuse the device buffer at once. */
    e = cudaMemcpy(host, t->data, bytes, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {
      int rc = p2p_cuda_fail(w, "cudaMemcpy (device to host)", e);
      cudaFreeHost(host);
      evmpi__cuda_p2p_leave(*saved_device);
      return rc;
    }
  }
  w->p2p_stage = host;
  *buf = host;
  return EVMPI_OK;
}

void evmpi__cuda_p2p_leave(int saved_device) {
  if (saved_device >= 0)
    cudaSetDevice(saved_device);
}

int evmpi__cuda_p2p_finish(evmpi_work_t *w, int status) {
  void *host = w->p2p_stage;
  w->p2p_stage = NULL;
  if (w->abandoned)
    return status; /* MPI may still read or write it: left to the process */
  if (status == EVMPI_OK && w->kind == EVMPI_WORK_RECV && host) {
    size_t bytes = tensor_bytes(w);
    if (w->recv_bytes >= 0 && (uint64_t)w->recv_bytes < bytes)
      bytes = (size_t)w->recv_bytes; /* the rest of the tensor is left as it was */
    /* The finishing thread (the poller, the loop thread, a waiter) keeps
     * its own current device: the copy needs the tensor's for a moment. */
    int saved = evmpi__cuda_current_device();
    cudaError_t e = cudaSetDevice(w->device.index);
    if (e == cudaSuccess)
      e = cudaMemcpy(w->tensors[0].data, host, bytes, cudaMemcpyHostToDevice);
    evmpi__cuda_restore_device(saved, w->device.index);
    if (e != cudaSuccess) {
      cudaGetLastError();
      status = evmpi__work_fail(w, EVMPI_ERR_CUDA, "cudaMemcpy (host to device) of the %zu "
                                "bytes received failed: %s: %s", bytes, cudaGetErrorName(e),
                                cudaGetErrorString(e));
    }
  }
  cudaFreeHost(host);
  return status;
}

void evmpi__cuda_p2p_discard(evmpi_work_t *w) {
  if (w->p2p_stage)
    cudaFreeHost(w->p2p_stage);
  w->p2p_stage = NULL;
}
