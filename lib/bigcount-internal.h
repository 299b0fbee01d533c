/*
 * bigcount-internal.h: element counts beyond INT_MAX. Private to lib/; names
 * with a double underscore are hidden from the shared library.
 */
#ifndef EVMPI_BIGCOUNT_INTERNAL_H
#define EVMPI_BIGCOUNT_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

/* numel elements of dtype as (count, type) for one MPI argument pair: the
 * plain type when numel fits an int, else one derived contiguous type of
 * extent numel * size, count 1. */
typedef struct {
  int count;
  MPI_Datatype type;
  bool owned;
} evmpi_block_t;

int evmpi__block_make(int64_t numel, evmpi_dtype_t dtype, evmpi_block_t *b);
void evmpi__block_free(evmpi_block_t *b);
/* MPI counts are ints: element-wise operations split larger counts into
 * chunks of at most this many elements. */
#define EVMPI_CHUNK_ELEMS ((int64_t)1 << 30)

#endif /* EVMPI_BIGCOUNT_INTERNAL_H */
