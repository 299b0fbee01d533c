/*
 * cuda_p2p-internal.h: sends and receives of CUDA device tensors
 * (EVMPI_HAVE_CUDA). Private to lib/; names with a double underscore are
 * hidden from the shared library.
 */
#ifndef EVMPI_CUDA_P2P_INTERNAL_H
#define EVMPI_CUDA_P2P_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#ifdef EVMPI_HAVE_CUDA
/* A send or receive of a CUDA tensor: the buffer to give MPI (the device
 * pointer on the direct path, a pinned host buffer, filled for a send, on
 * the staged one). The device is made current on the calling thread
 * until evmpi__cuda_p2p_leave. */
int evmpi__cuda_p2p_enter(evmpi_work_t *w, void **buf, int *saved_device);
void evmpi__cuda_p2p_leave(int saved_device);
/* At completion: copies an arrived message to the device, frees the pinned
 * buffer (unless MPI may still use it); may turn status into
 * EVMPI_ERR_CUDA. */
int evmpi__cuda_p2p_finish(evmpi_work_t *w, int status);
/* Frees a pinned buffer whose request was never issued. */
void evmpi__cuda_p2p_discard(evmpi_work_t *w);
#endif

#endif /* EVMPI_CUDA_P2P_INTERNAL_H */
