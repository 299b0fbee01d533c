/*
 * mpi_ext-internal.h: extensions of one MPI, behind one guard. Private to
 * lib/; names with a double underscore are hidden from the shared library.
 */
#ifndef EVMPI_MPI_EXT_INTERNAL_H
#define EVMPI_MPI_EXT_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#include <mpi.h>

/* 1 when the MPI says it takes CUDA device pointers; 0 when it says it does
 * not or has no way to say. Call after MPI is initialised. */
int evmpi__mpi_query_cuda_support(void);
/* Around every MPI test call of evmpi's (Testsome, Test): an error of a
 * completed request is returned there, never raised as fatal, also on an
 * MPI that raises it on MPI_COMM_WORLD's handler (MPICH), once
 * evmpi__mpi_hook_request_errors has run (when MPI is first used). */
void evmpi__mpi_test_begin(void);
void evmpi__mpi_test_end(void);
int evmpi__mpi_hook_request_errors(void);
/* Around each of evmpi's MPI calls that can match a message to a posted
 * receive without blocking (MPI_Isend, MPI_Irecv, the test calls), never
 * nested; and MPI_Cancel as evmpi__mpi_cancel, which waits for those to
 * leave: Open MPI corrupts its queues when a receive is cancelled while
 * another thread matches it (mpi_ext.c). No-ops on other MPIs. */
void evmpi__mpi_match_enter(void);
void evmpi__mpi_match_leave(void);
int evmpi__mpi_cancel(MPI_Request *req);
/* MPI_Test of one request inside both guards above: the match lock and
 * the test's error handling (evmpi__mpi_test_begin). */
int evmpi__mpi_test(MPI_Request *req, int *flag, MPI_Status *status);
/* Whether a large (rendezvous) message progresses only while MPI is
 * called on its sides, so that the poller should keep testing while one
 * is pending (poller.c) rather than sleep. */
bool evmpi__mpi_rendezvous_needs_polling(void);
/* Around a long blocking collective (any thread, nested across threads
 * and groups): the MPI's progress engine yields the core while it has
 * nothing to do, so that the loop thread that shares the core runs
 * (Open MPI; a no-op elsewhere). */
void evmpi__mpi_yield_begin(void);
void evmpi__mpi_yield_end(void);

#endif /* EVMPI_MPI_EXT_INTERNAL_H */
