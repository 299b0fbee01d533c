/*
 * ops-internal.h: each operation's prepare, run and chunk functions, which
 * op_table.c names. Private to lib/; names with a double underscore are
 * hidden from the shared library.
 */
#ifndef EVMPI_OPS_INTERNAL_H
#define EVMPI_OPS_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#include "op_table-internal.h"

/* ops_collective.c: allreduce, reduce and broadcast share prepare and run
 * (pieces of the tensor, each to the row's chunk function); barrier. */
evmpi_prepare_t evmpi__prepare_elementwise, evmpi__prepare_barrier;
evmpi_run_t evmpi__run_elementwise, evmpi__run_barrier;
evmpi_chunk_t evmpi__broadcast_chunk;
evmpi_carry_t evmpi__barrier_carry;
/* ops_reduce.c */
evmpi_run_t evmpi__run_allreduce;
evmpi_chunk_t evmpi__allreduce_chunk, evmpi__reduce_chunk;
evmpi_carry_t evmpi__allreduce_carry;
evmpi_prepare_t evmpi__prepare_reduce_scatter, evmpi__prepare_allreduce_coalesced;
evmpi_run_t evmpi__run_reduce_scatter, evmpi__run_allreduce_coalesced;
/* ops_gather.c: allgather, gather and scatter share prepare and run (a
 * tensor per rank to or from one tensor) */
evmpi_prepare_t evmpi__prepare_per_rank, evmpi__prepare_allgather_base,
    evmpi__prepare_allgather_coalesced;
evmpi_run_t evmpi__run_per_rank, evmpi__run_allgather_base, evmpi__run_allgather_coalesced;
/* ops_alltoall.c */
evmpi_prepare_t evmpi__prepare_alltoall_base, evmpi__prepare_alltoall;
evmpi_run_t evmpi__run_alltoall_base, evmpi__run_alltoall;
/* ops_p2p.c: send, recv and recv_anysource share prepare and issue */
evmpi_prepare_t evmpi__prepare_p2p;
evmpi_issue_t evmpi__issue_p2p;

#endif /* EVMPI_OPS_INTERNAL_H */
