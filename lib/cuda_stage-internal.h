/*
 * cuda_stage-internal.h: collectives on CUDA device tensors, staged through
 * pinned host memory (EVMPI_HAVE_CUDA). Private to lib/; names with a double
 * underscore are hidden from the shared library.
 */
#ifndef EVMPI_CUDA_STAGE_INTERNAL_H
#define EVMPI_CUDA_STAGE_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#ifdef EVMPI_HAVE_CUDA
typedef struct evmpi_stager evmpi_stager_t;
/* Runs a collective whose tensors are on a CUDA device (worker thread). */
int evmpi__cuda_run(evmpi_work_t *w);
void evmpi__stager_free(evmpi_stager_t *s);
#endif

#endif /* EVMPI_CUDA_STAGE_INTERNAL_H */
