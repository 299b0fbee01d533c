/*
 * cuda-internal.h: CUDA device tensors: a group's path, the checks on a
 * device tensor, the current device. Private to lib/; names with a double
 * underscore are hidden from the shared library.
 */
#ifndef EVMPI_CUDA_INTERNAL_H
#define EVMPI_CUDA_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#include <stdbool.h>
#include <stddef.h>

/* Chooses a new group's CUDA path and chunk size from the EVMPI_CUDA_*
 * variables; EVMPI_ERR_INVALID names a variable with a bad value. Runs
 * after evmpi__pieces_configure: a chunk is a whole number of pieces. */
int evmpi__cuda_configure(const char *op, evmpi_pg_t *pg);
#ifdef EVMPI_HAVE_CUDA
/* Checks a CUDA tensor's device index and that its data is on it. */
int evmpi__cuda_check_tensor(const char *op, const char *arg, const evmpi_tensor_t *t,
                             int64_t numel);
/* The calling thread's current device, or -1 when the runtime cannot say.
 * Every function of cuda.c and cuda_stage.c that sets a device gives the
 * caller's back (evmpi__cuda_restore_device): the worker, the poller, the
 * loop thread and the application's threads all keep their own. */
int evmpi__cuda_current_device(void);
/* Makes saved current again after set was made current (nothing when they
 * are the same or saved is -1). */
void evmpi__cuda_restore_device(int saved, int set);
/* Copies bytes from src to dst, one of them memory of device (the host's
 * to the device's when to_device), with device current for the copy and
 * the caller's given back. False on failure, the runtime's error in why. */
bool evmpi__cuda_copy(void *dst, const void *src, size_t bytes, int device, bool to_device,
                      char *why, size_t len);
#endif

#endif /* EVMPI_CUDA_INTERNAL_H */
