/* mpi_ext.c: what one MPI offers beyond the standard, behind one guard
 * each, so that another MPI (MPICH, ...) adds its own branch here and
 * nowhere else. */
#include "evmpi-internal.h"

#if defined(OPEN_MPI) && OPEN_MPI
#include <mpi-ext.h> /* MPIX_CUDA_AWARE_SUPPORT, MPIX_Query_cuda_support */
#endif

int evmpi__mpi_query_cuda_support(void) {
#if defined(OPEN_MPI) && OPEN_MPI && defined(MPIX_CUDA_AWARE_SUPPORT)
  /* The macro says whether this Open MPI was built with CUDA; the call
   * whether the library loaded at run time supports it now (Debian's is
   * built without: the macro is 0 and the call returns 0). */
  return MPIX_Query_cuda_support() == 1;
#else
  return 0;
#endif
}
