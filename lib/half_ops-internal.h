/*
 * half_ops-internal.h: float16 and bfloat16 reductions. Private to lib/;
 * names with a double underscore are hidden from the shared library.
 */
#ifndef EVMPI_HALF_OPS_INTERNAL_H
#define EVMPI_HALF_OPS_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

/* The MPI_Op for op on a 16-bit float dtype (sum for avg), created once. */
int evmpi__half_op(evmpi_dtype_t dtype, evmpi_reduce_op_t op, MPI_Op *out);
void evmpi__half_divide(void *data, evmpi_dtype_t dtype, int64_t count, int divisor);

#endif /* EVMPI_HALF_OPS_INTERNAL_H */
