/*
 * dtype_mpi-internal.h: evmpi's dtypes and reduce ops as MPI's. Private to
 * lib/; names with a double underscore are hidden from the shared library.
 */
#ifndef EVMPI_DTYPE_MPI_INTERNAL_H
#define EVMPI_DTYPE_MPI_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

MPI_Datatype evmpi__mpi_datatype(evmpi_dtype_t dtype);
const char *evmpi__dtype_name(evmpi_dtype_t dtype);
const char *evmpi__reduce_op_name(evmpi_reduce_op_t op);
/* The MPI_Op for op on dtype, or a refusal (EVMPI_ERR_INVALID for an op
 * outside the enum, EVMPI_ERR_UNSUPPORTED for a pair that makes no sense).
 * *post_divide is set when the op is an average (a sum then a division). */
int evmpi__mpi_reduce_op(const char *opname, evmpi_reduce_op_t op, evmpi_dtype_t dtype,
                         MPI_Op *mpi_op, bool *post_divide);
/* Divides count elements of dtype at data by divisor, in place (avg). */
void evmpi__divide(void *data, evmpi_dtype_t dtype, int64_t count, int divisor);

#endif /* EVMPI_DTYPE_MPI_INTERNAL_H */
