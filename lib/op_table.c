/* op_table.c: every operation, described once: its identity (id and the
 * two names it is known by), the MPI call it makes, what kind of work it
 * is, how the generic submit path (op_submit.c) treats it, and the
 * functions that check and run it (or, for sends and receives, issue it).
 * A new collective is a row here, a prepare and a run function, and a
 * public entry point in op_submit.c.
 *
 * The work names are those of PyTorch's ProcessGroupMPI
 * (torch/csrc/distributed/c10d/ProcessGroupMPI.cpp), so that a trace
 * reads like one of torch's; both alltoall forms are "mpi:all_to_all"
 * there too. */
#include "op_table-internal.h"
#include "ops-internal.h"

#define COLL EVMPI_WORK_COLLECTIVE, EVMPI_ARGS_COLL

const evmpi_op_t evmpi__ops[EVMPI_OP_COUNT] = {
    [EVMPI_OP_ALLREDUCE] = {EVMPI_OP_ALLREDUCE, "allreduce", "mpi:all_reduce", "MPI_Allreduce",
                            COLL, EVMPI_OPF_REDUCES | EVMPI_OPF_IN_PLACE,
                            evmpi__prepare_elementwise, evmpi__run_allreduce,
                            evmpi__allreduce_chunk, NULL, evmpi__allreduce_carry},
    [EVMPI_OP_BROADCAST] = {EVMPI_OP_BROADCAST, "broadcast", "mpi:broadcast", "MPI_Bcast", COLL,
                            EVMPI_OPF_ROOTED | EVMPI_OPF_IN_PLACE | EVMPI_OPF_FROM_ROOT |
                                EVMPI_OPF_WHOLE_PIECES,
                            evmpi__prepare_elementwise, evmpi__run_elementwise,
                            evmpi__broadcast_chunk},
    [EVMPI_OP_BARRIER] = {EVMPI_OP_BARRIER, "barrier", "mpi:barrier", "MPI_Barrier", COLL, 0,
                          evmpi__prepare_barrier, evmpi__run_barrier, NULL, NULL,
                          evmpi__barrier_carry},
    [EVMPI_OP_REDUCE] = {EVMPI_OP_REDUCE, "reduce", "mpi:reduce", "MPI_Reduce", COLL,
                         EVMPI_OPF_ROOTED | EVMPI_OPF_REDUCES | EVMPI_OPF_IN_PLACE |
                             EVMPI_OPF_TO_ROOT,
                         evmpi__prepare_elementwise, evmpi__run_elementwise,
                         evmpi__reduce_chunk},
    [EVMPI_OP_REDUCE_SCATTER] = {EVMPI_OP_REDUCE_SCATTER, "reduce_scatter", "mpi:reduce_scatter",
                                 "MPI_Reduce_scatter_block", COLL,
                                 EVMPI_OPF_REDUCES | EVMPI_OPF_HOST_ACCESS,
                                 evmpi__prepare_reduce_scatter, evmpi__run_reduce_scatter, NULL},
    [EVMPI_OP_ALLREDUCE_COALESCED] = {EVMPI_OP_ALLREDUCE_COALESCED, "allreduce_coalesced",
                                      "mpi:allreduce_coalesced", "MPI_Allreduce", COLL,
                                      EVMPI_OPF_REDUCES | EVMPI_OPF_IN_PLACE |
                                          EVMPI_OPF_HOST_ACCESS,
                                      evmpi__prepare_allreduce_coalesced,
                                      evmpi__run_allreduce_coalesced, NULL},
    [EVMPI_OP_ALLGATHER] = {EVMPI_OP_ALLGATHER, "allgather", "mpi:all_gather", "MPI_Allgather",
                            COLL, 0, evmpi__prepare_per_rank, evmpi__run_per_rank, NULL},
    [EVMPI_OP_ALLGATHER_BASE] = {EVMPI_OP_ALLGATHER_BASE, "allgather_base", "mpi:_allgather_base",
                                 "MPI_Allgather", COLL, 0, evmpi__prepare_allgather_base,
                                 evmpi__run_allgather_base, NULL},
    [EVMPI_OP_ALLGATHER_COALESCED] = {EVMPI_OP_ALLGATHER_COALESCED, "allgather_coalesced",
                                      "mpi:allgather_coalesced", "MPI_Allgather", COLL,
                                      EVMPI_OPF_HOST_ACCESS, evmpi__prepare_allgather_coalesced,
                                      evmpi__run_allgather_coalesced, NULL},
    [EVMPI_OP_GATHER] = {EVMPI_OP_GATHER, "gather", "mpi:gather", "MPI_Gather", COLL,
                         EVMPI_OPF_ROOTED | EVMPI_OPF_TO_ROOT, evmpi__prepare_per_rank,
                         evmpi__run_per_rank, NULL},
    [EVMPI_OP_SCATTER] = {EVMPI_OP_SCATTER, "scatter", "mpi:scatter", "MPI_Scatter", COLL,
                          EVMPI_OPF_ROOTED | EVMPI_OPF_FROM_ROOT, evmpi__prepare_per_rank,
                          evmpi__run_per_rank, NULL},
    [EVMPI_OP_ALLTOALL_BASE] = {EVMPI_OP_ALLTOALL_BASE, "alltoall_base", "mpi:all_to_all",
                                "MPI_Alltoall", EVMPI_WORK_COLLECTIVE, EVMPI_ARGS_ALLTOALL, 0,
                                evmpi__prepare_alltoall_base, evmpi__run_alltoall_base, NULL},
    [EVMPI_OP_ALLTOALL] = {EVMPI_OP_ALLTOALL, "alltoall", "mpi:all_to_all", "MPI_Waitall", COLL, 0,
                           evmpi__prepare_alltoall, evmpi__run_alltoall, NULL},
    [EVMPI_OP_SEND] = {EVMPI_OP_SEND, "send", "mpi:send", "MPI_Isend", EVMPI_WORK_SEND,
                       EVMPI_ARGS_P2P, 0, evmpi__prepare_p2p, NULL, NULL, evmpi__issue_p2p},
    [EVMPI_OP_RECV] = {EVMPI_OP_RECV, "recv", "mpi:recv", "MPI_Irecv", EVMPI_WORK_RECV,
                       EVMPI_ARGS_P2P, 0, evmpi__prepare_p2p, NULL, NULL, evmpi__issue_p2p},
    [EVMPI_OP_RECV_ANYSOURCE] = {EVMPI_OP_RECV_ANYSOURCE, "recv_anysource", "mpi:recvAnySource",
                                 "MPI_Irecv", EVMPI_WORK_RECV, EVMPI_ARGS_P2P, 0,
                                 evmpi__prepare_p2p, NULL, NULL, evmpi__issue_p2p},
};
