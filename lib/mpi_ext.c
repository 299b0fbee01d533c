/* mpi_ext.c: what one MPI offers or does beyond the standard, behind one
 * guard each, so that another MPI adds its own branch here and nowhere
 * else. */
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
#elif defined(MPICH) && defined(MPIX_GPU_SUPPORT_CUDA)
  /* MPICH 4 and its derivatives: one query per GPU kind. */
  int supported = 0;
  if (MPIX_GPU_query_support(MPIX_GPU_SUPPORT_CUDA, &supported) != MPI_SUCCESS)
    return 0;
  return supported != 0;
#else
  return 0;
#endif
}

bool evmpi__mpi_testsome_errors_return(void) {
#if defined(MPICH)
  /* MPICH raises an error of a multiple-completion call (a truncated
   * receive among the requests) on MPI_COMM_WORLD's handler, fatal by
   * default, not on the requests' communicator: the application's world
   * handler is not evmpi's to change, so each request is tested alone
   * there, with MPI_Test, whose errors go to its communicator's handler
   * (MPI_ERRORS_RETURN). */
  return false;
#else
  /* Open MPI raises it on the requests' communicator. */
  return true;
#endif
}
