/*
 * op_table-internal.h: what each operation is: its row, its arguments, its
 * plan. Private to lib/; names with a double underscore are hidden from the
 * shared library.
 */
#ifndef EVMPI_OP_TABLE_INTERNAL_H
#define EVMPI_OP_TABLE_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

/* An operation's identity. Every rank of one build numbers them alike, so
 * EVMPI_DEBUG=detail compares ids across ranks. */
typedef enum {
  EVMPI_OP_ALLREDUCE,
  EVMPI_OP_BROADCAST,
  EVMPI_OP_BARRIER,
  EVMPI_OP_REDUCE,
  EVMPI_OP_REDUCE_SCATTER,
  EVMPI_OP_ALLREDUCE_COALESCED,
  EVMPI_OP_ALLGATHER,
  EVMPI_OP_ALLGATHER_BASE,
  EVMPI_OP_ALLGATHER_COALESCED,
  EVMPI_OP_GATHER,
  EVMPI_OP_SCATTER,
  EVMPI_OP_ALLTOALL_BASE,
  EVMPI_OP_ALLTOALL,
  EVMPI_OP_SEND,
  EVMPI_OP_RECV,
  EVMPI_OP_RECV_ANYSOURCE,
  EVMPI_OP_COUNT
} evmpi_op_id_t;

typedef enum { EVMPI_WORK_COLLECTIVE, EVMPI_WORK_SEND, EVMPI_WORK_RECV } evmpi_work_kind_t;
typedef enum { EVMPI_WORK_QUEUED, EVMPI_WORK_RUNNING, EVMPI_WORK_DONE } evmpi_work_state_t;

/* Which member of evmpi_op_args_t an operation's works hold. */
typedef enum { EVMPI_ARGS_COLL, EVMPI_ARGS_ALLTOALL, EVMPI_ARGS_P2P } evmpi_args_kind_t;

/* An operation's arguments beyond its tensors, one member per kind. */
typedef union {
  /* every collective but alltoall_base */
  struct {
    int root;               /* -1 unless the operation is EVMPI_OPF_ROOTED */
    evmpi_reduce_op_t op;   /* reductions (EVMPI_OPF_REDUCES) */
    MPI_Op mpi_op;          /* op on the tensors' dtype (not for the coalesced
                               form, whose dtypes differ) */
    bool post_divide;       /* op is an average: a sum, then a division */
  } coll;
  /* alltoall_base: the output splits then the input splits, in rows of
   * dim 0 (owned by the work); equal when neither was given, which goes
   * to MPI_Alltoall rather than MPI_Alltoallv */
  struct {
    int64_t *splits;
    bool equal;
  } alltoall;
  struct {
    int peer, tag;          /* peer is MPI_ANY_SOURCE for recv_anysource */
  } p2p;
} evmpi_op_args_t;

/* The arguments of a public call, as the generic submit path hands them
 * to the operation's prepare. Unused ones are zero. */
typedef struct {
  evmpi_tensor_t *output;          /* the single output (or in-place) tensor */
  const evmpi_tensor_t *input;     /* the single input */
  evmpi_tensor_t *outputs;         /* lists: per rank, or the coalesced ones */
  const evmpi_tensor_t *inputs;
  size_t count;                    /* the coalesced forms' list length */
  int root;
  evmpi_reduce_op_t op;
  const int64_t *output_splits, *input_splits;
  int peer, tag;                   /* sends and receives */
} evmpi_op_call_t;

/* What prepare makes of a call, before anything is allocated: the work's
 * tensors are outputs[0..noutputs) then inputs[0..ninputs), and every
 * run finds its inputs at tensors + noutputs. */
typedef struct {
  const evmpi_tensor_t *outputs, *inputs;
  size_t noutputs, ninputs;
  int64_t numel;          /* what every rank agrees on (EVMPI_DEBUG=detail)
                             and element-wise runs cut: -1 when ranks may differ */
  evmpi_op_args_t args;
  bool host_access;       /* see evmpi_work.host_access; or'ed with the flag */
} evmpi_op_plan_t;

typedef struct evmpi_op evmpi_op_t;

/* Runs a collective on the worker thread. Returns a status; on failure it
 * sets work->error_text (evmpi__work_mpi_error does so for MPI codes). */
typedef int evmpi_run_t(evmpi_work_t *work);
typedef evmpi_run_t *evmpi_run_fn;
/* An element-wise step of a one-tensor collective on count elements at
 * data, element offset off into tensors[0]: what a staged CUDA tensor's
 * pipeline runs on each chunk (in pinned host memory). */
typedef int evmpi_chunk_t(evmpi_work_t *work, void *data, int64_t off, int count);
typedef evmpi_chunk_t *evmpi_chunk_fn;
/* Issues a send's or a receive's request on the submitting thread (MPI_Isend
 * and MPI_Irecv never block) and hands the work to the poller. On failure
 * it has set the last error; the caller discards the work. */
typedef int evmpi_issue_t(evmpi_work_t *work);
typedef evmpi_issue_t *evmpi_issue_fn;
/* Checks a call's arguments (on the submitting thread; sets the last
 * error and returns its status) and fills the plan; nothing is allocated
 * but what the plan owns (alltoall splits). */
typedef int evmpi_prepare_t(const evmpi_op_t *op, evmpi_pg_t *pg, const evmpi_op_call_t *call,
                            evmpi_op_plan_t *plan);
typedef evmpi_prepare_t *evmpi_prepare_fn;
/* Posts the arrival gate before a collective with the collective in it,
 * when this one can ride the gate (gate.c): *carried then says so, and
 * run has only to finish the work once the gate is passed (count and quiet
 * as evmpi__gate_post takes them). When it cannot,
 * *carried is false and nothing is posted. The choice may depend only on
 * what every rank of the group sees alike (the call, the group). An MPI
 * error code on failure. */
struct evmpi_gate;
typedef int evmpi_carry_t(evmpi_work_t *work, struct evmpi_gate *gate, int count, bool quiet,
                          bool *carried);
typedef evmpi_carry_t *evmpi_carry_fn;

/* What the generic submit path does besides prepare and run. */
enum {
  EVMPI_OPF_ROOTED = 1 << 0,      /* takes a root (args.coll.root) */
  EVMPI_OPF_REDUCES = 1 << 1,     /* takes a reduce op (args.coll.op) */
  EVMPI_OPF_IN_PLACE = 1 << 2,    /* its outputs are read too (staged CUDA copies them in) */
  EVMPI_OPF_TO_ROOT = 1 << 3,     /* data flows to the root: only its outputs change */
  EVMPI_OPF_FROM_ROOT = 1 << 4,   /* data flows from the root: only its tensors are
                                     read, only the others' outputs change */
  EVMPI_OPF_WHOLE_PIECES = 1 << 5, /* cut in pieces of evmpi__whole_max_bytes, not of
                                      EVMPI_PIECE (broadcast) */
  EVMPI_OPF_HOST_ACCESS = 1 << 6, /* run always reads or writes the data itself (packing) */
};

struct evmpi_op {
  evmpi_op_id_t id;
  const char *opname;       /* "allreduce": messages, EVMPI_DEBUG=detail */
  const char *name;         /* "mpi:all_reduce": evmpi_work_name, EVMPI_TIMELINE (the
                               names of PyTorch's ProcessGroupMPI) */
  const char *mpi_call;     /* "MPI_Allreduce": the call a failure names */
  evmpi_work_kind_t kind;
  evmpi_args_kind_t args;
  unsigned flags;           /* EVMPI_OPF_* */
  evmpi_prepare_fn prepare; /* every operation, on the submitting thread */
  evmpi_run_fn run;         /* collectives, on the worker thread */
  evmpi_chunk_fn run_chunk; /* element-wise ones: a piece, or a staged CUDA chunk */
  evmpi_issue_fn issue;     /* sends and receives: issued at once, not queued */
  evmpi_carry_fn carry;     /* collectives that can ride the arrival gate */
};

/* Every operation, indexed by its id. */
extern const evmpi_op_t evmpi__ops[EVMPI_OP_COUNT];

#endif /* EVMPI_OP_TABLE_INTERNAL_H */
