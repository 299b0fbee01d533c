/* bigcount.c: element counts beyond INT_MAX. MPI counts are ints; a larger
 * buffer moves as one element of a derived type: whole chunks of 2^30
 * elements, then the remainder, resized so that its extent is exactly the
 * buffer's size (displacements in collectives stay right). */
#include "bigcount-internal.h"
#include "dtype_mpi-internal.h"

#include <limits.h>

int evmpi__block_make(int64_t numel, evmpi_dtype_t dtype, evmpi_block_t *b) {
  MPI_Datatype base = evmpi__mpi_datatype(dtype);
  b->owned = false;
  if (numel < 0)
    return MPI_ERR_COUNT;
  if (numel <= INT_MAX) {
    b->count = (int)numel;
    b->type = base;
    return MPI_SUCCESS;
  }
  size_t esz = evmpi_dtype_size(dtype);
  int64_t chunks = numel / EVMPI_CHUNK_ELEMS, rest = numel % EVMPI_CHUNK_ELEMS;
  /* The chunk count is an int, and the extent a byte count: beyond those
   * (2^61 elements) no datatype of this shape describes the buffer, and
   * a truncated count would move part of it and say nothing. */
  int64_t extent;
  if (chunks > INT_MAX || __builtin_mul_overflow(numel, (int64_t)esz, &extent))
    return MPI_ERR_COUNT;
  MPI_Datatype chunk = MPI_DATATYPE_NULL, whole = MPI_DATATYPE_NULL;
  MPI_Datatype joined = MPI_DATATYPE_NULL, sized = MPI_DATATYPE_NULL;
  int rc = MPI_Type_contiguous((int)EVMPI_CHUNK_ELEMS, base, &chunk);
  if (rc == MPI_SUCCESS)
    rc = MPI_Type_contiguous((int)chunks, chunk, &whole);
  if (rc == MPI_SUCCESS) {
    int lens[2] = {1, (int)rest};
    MPI_Aint displs[2] = {0, (MPI_Aint)(chunks * EVMPI_CHUNK_ELEMS * (int64_t)esz)};
    MPI_Datatype types[2] = {whole, base};
    rc = MPI_Type_create_struct(rest ? 2 : 1, lens, displs, types, &joined);
  }
  if (rc == MPI_SUCCESS)
    rc = MPI_Type_create_resized(joined, 0, (MPI_Aint)extent, &sized);
  if (rc == MPI_SUCCESS)
    rc = MPI_Type_commit(&sized);
  if (chunk != MPI_DATATYPE_NULL)
    MPI_Type_free(&chunk);
  if (whole != MPI_DATATYPE_NULL)
    MPI_Type_free(&whole);
  if (joined != MPI_DATATYPE_NULL)
    MPI_Type_free(&joined);
  if (rc != MPI_SUCCESS) {
    if (sized != MPI_DATATYPE_NULL)
      MPI_Type_free(&sized);
    return rc;
  }
  b->count = 1;
  b->type = sized;
  b->owned = true;
  return MPI_SUCCESS;
}

void evmpi__block_free(evmpi_block_t *b) {
  if (b->owned)
    MPI_Type_free(&b->type);
  b->owned = false;
}
