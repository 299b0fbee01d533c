/*
 * evmpi-internal.h: the library's private types and the functions its
 * modules call on each other. Never installed. Names with a double
 * underscore (evmpi__) are internal and hidden from the shared library.
 */
#ifndef EVMPI_INTERNAL_H
#define EVMPI_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>

#include "ref-internal.h"

struct event;

/* ---- status.c: errors as values ---------------------------------------- */

/* Formats the thread's last-error message and returns status, so that a
 * check reads `return evmpi__fail(EVMPI_ERR_INVALID, "...", ...)`. */
int evmpi__fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A malloc'ed formatted string, or NULL when out of memory. */
char *evmpi__asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* MPI's text for an error code: "MPI_ERR_TRUNCATE: message truncated". */
void evmpi__mpi_error_text(int code, char *buf, size_t len);

/* ---- tensor.c: descriptor checks --------------------------------------- */

/* Checks one tensor given to operation op as argument arg; on success
 * stores its element count. Sets the last error and returns its status. */
int evmpi__check_tensor(const char *op, const char *arg, const evmpi_tensor_t *t, int64_t *numel);
/* Checks list[0..n), named arg ("outputs"): each well formed, with dtype
 * and (when numel >= 0) numel elements, as the reference named ref has. */
int evmpi__check_list(const char *op, const char *arg, const evmpi_tensor_t *list, int n,
                      const char *ref, const evmpi_tensor_t *like, int64_t numel);
/* Checks that t (named arg) is on the device of ref (named refname): an
 * operation's tensors are all on one device. */
int evmpi__check_same_device(const char *op, const char *arg, const evmpi_tensor_t *t,
                             const char *refname, const evmpi_tensor_t *ref);
/* Checks that numel elements of dtype for each of size ranks (what a
 * gather, scatter or allgather moves and packs in all) fit INT64_MAX
 * bytes; EVMPI_ERR_INVALID naming arg otherwise. Every rank checks it
 * alike, so none enters a collective that another refused. */
int evmpi__check_group_bytes(const char *op, const char *arg, int64_t numel,
                             evmpi_dtype_t dtype, int size);
/* Checks an operation's output and input (allgather_base, alltoall_base):
 * each well formed, of one dtype, on one device; stores their counts. */
int evmpi__check_pair(const char *op, const evmpi_tensor_t *output, const evmpi_tensor_t *input,
                      int64_t *out_numel, int64_t *in_numel);
/* Checks that the bytes of list[0..n) (named arg) add up to at most
 * INT64_MAX, as a coalesced operation packs them into one buffer; stores
 * the sum of their element counts in *numel and of their bytes in *bytes. */
int evmpi__check_list_bytes(const char *op, const char *arg, const evmpi_tensor_t *list, size_t n,
                            int64_t *numel, int64_t *bytes);
/* "cpu" or "cuda:1", into buf. */
const char *evmpi__device_name(evmpi_device_t dev, char *buf, size_t len);

/* ---- dtype_mpi.c: evmpi types and ops to MPI's ------------------------- */

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

/* ---- half_ops.c: float16 and bfloat16 reductions ------------------------ */

/* The MPI_Op for op on a 16-bit float dtype (sum for avg), created once. */
int evmpi__half_op(evmpi_dtype_t dtype, evmpi_reduce_op_t op, MPI_Op *out);
void evmpi__half_divide(void *data, evmpi_dtype_t dtype, int64_t count, int divisor);

/* ---- bigcount.c: element counts beyond INT_MAX ---------------------------- */

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

/* ---- env.c, options.c: settings (settings.h) ---------------------------- */

#include "settings.h"

/* ---- clock ----------------------------------------------------------------- */

#include <time.h>
static inline int64_t evmpi__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
/* Makes cv wait on CLOCK_MONOTONIC, whose deadlines (evmpi__now_ns and
 * evmpi__timespec_after) a step of the wall clock cannot move. */
static inline void evmpi__cond_init_monotonic(pthread_cond_t *cv) {
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &attr);
  pthread_condattr_destroy(&attr);
}
/* The time ns nanoseconds from now on clock, as pthread_cond_timedwait
 * takes it (the clock its condition variable was made with). */
static inline struct timespec evmpi__timespec_after(clockid_t clock, int64_t ns) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  ts.tv_sec += (time_t)(ns / 1000000000);
  ts.tv_nsec += (long)(ns % 1000000000);
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

/* ---- debug.c: EVMPI_DEBUG=detail, mismatched collectives ------------------ */

/* Whether a worker must ask evmpi__debug_check before each collective:
 * true once any group of the process was created with EVMPI_DEBUG=detail
 * (evmpi__debug_enable, before that group's worker starts). */
bool evmpi__debug_detail(void);
void evmpi__debug_enable(void);
/* Compares w's signature with every rank's (on the worker, before w
 * runs) when w's group has EVMPI_DEBUG=detail (EVMPI_OK at once
 * otherwise); on a mismatch sets w's message and returns
 * EVMPI_ERR_INVALID. */
int evmpi__debug_check(evmpi_work_t *w);

/* ---- timeline.c: EVMPI_TIMELINE=path, a Chrome trace per rank -------------- */

/* Opens the process's trace file at path, unless one is open already
 * (the first group with a path opens it); on failure says so on stderr. */
void evmpi__timeline_open(const char *path);
/* Records w when its group was created with a timeline. */
void evmpi__timeline_record(const evmpi_work_t *w, int status);
/* Writes out what is buffered (at group destroy). */
void evmpi__timeline_flush(void);

/* ---- mpi_env.c: MPI initialised once, finalised once ------------------- */

/* What MPI_Finalize (the application's, or evmpi's own at exit) has the
 * groups do first. The group layer (pg.c) gives it: mpi_env.c sits below
 * the groups and reaches them only through these. */
typedef struct {
  /* Stops every live group and waits for the teardowns under way, wait_ms
   * at most in all; false when one was still running. */
  bool (*stop_groups)(int wait_ms);
  /* Waits up to ms for the workers that broken groups left inside MPI to
   * leave it; false when some are still there. */
  bool (*wait_detached)(int ms);
  /* Whether a group was broken by a timeout: MPI_Finalize is then bounded. */
  bool (*any_broken)(void);
} evmpi_finalize_hooks_t;

/* Initialises MPI once (MPI_THREAD_MULTIPLE) and hooks MPI_Finalize;
 * hooks are kept from the first call. */
int evmpi__mpi_ensure_init(const evmpi_finalize_hooks_t *hooks);
/* EVMPI_EXIT_WAIT_MS, process-wide: set by each group created with it
 * set (options.c resolves it), read at MPI_Finalize. */
void evmpi__mpi_set_exit_wait_ms(int ms);
int evmpi__mpi_exit_wait_ms(void);

/* ---- mpi_ext.c: extensions of one MPI, behind one guard ------------------ */

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
/* Whether a large (rendezvous) message progresses only while MPI is
 * called on its sides, so that the poller should keep testing while one
 * is pending (poller.c) rather than sleep. */
bool evmpi__mpi_rendezvous_needs_polling(void);

/* ---- future.c ---------------------------------------------------------- */

typedef struct evmpi_cont evmpi_cont_t;
typedef struct evmpi_join_link evmpi_join_link_t;

/* One callback registered on a future. Defined here (not in future.c) so
 * that a future can hold its first callback inline: most works get exactly
 * one, and a malloc + free per operation was a tenth of the per-operation
 * cost of queued small collectives. */
struct evmpi_cont {
  evmpi_cont_t *next;
  bool for_work;
  union {
    evmpi_work_cb work;
    evmpi_future_cb future;
  } fn;
  void *arg;
};

/* Where a future's callbacks run: a group's loop (bridge.c makes one per
 * group). A future that may post to a sink holds a reference on ref, the
 * group's count. */
typedef struct evmpi_future_sink {
  evmpi_ref_t *ref;
  /* Hands f to the loop (the caller has taken a reference on f for it);
   * false when the loop is gone, and the caller delivers f itself. */
  bool (*post)(struct evmpi_future_sink *sink, evmpi_future_t *f);
} evmpi_future_sink_t;

struct evmpi_future {
  evmpi_ref_t *ref;         /* the count: the owning work's, or own_ref */
  evmpi_ref_t own_ref;      /* standalone futures (joins) only */
  evmpi_work_t *owner;      /* the work whose future this is, or NULL */
  evmpi_future_sink_t *sink; /* whose loop runs the continuations (a ref on it) */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;                /* under mu */
  int status;               /* under mu, final once done */
  char *error;              /* under mu, final once done */
  const evmpi_tensor_t *value;
  size_t nvalue;
  evmpi_cont_t *conts, *conts_tail; /* under mu: callbacks not yet run */
  bool queued;              /* under mu: on the bridge's delivery list */
  evmpi_join_link_t *parents; /* under mu: joins waiting on this one */
  evmpi_future_t *next_delivery; /* bridge list link, set before the push */
  /* joins (evmpi_future_all) only: */
  atomic_size_t pending;
  evmpi_future_t **children;
  size_t nchildren;
  /* The first callback's storage (see struct evmpi_cont). Taken once, under
   * mu, and never reused for the future's life: a callback that registers
   * another on the same future while it runs gets a malloc'ed one. */
  evmpi_cont_t inline_cont;
  bool inline_cont_taken;   /* under mu */
};

/* The fields of a work's future, whose memory is zero but for mu and cv
 * (made by evmpi__future_sync_init, and kept made from one use of a pooled
 * work to the next, work.c): it counts with owner_ref, the work's, and
 * posts to sink (NULL: its callbacks run where it completes). */
void evmpi__future_reset(evmpi_future_t *f, evmpi_work_t *owner, evmpi_ref_t *owner_ref,
                         evmpi_future_sink_t *sink);
void evmpi__future_sync_init(evmpi_future_t *f);
void evmpi__future_sync_destroy(evmpi_future_t *f);
/* Frees what the future holds (callbacks, links, error text, its group
 * reference); not mu and cv (evmpi__future_sync_destroy). */
void evmpi__future_cleanup(evmpi_future_t *f);
/* Marks f done (any thread), wakes waiters, counts down joins and hands
 * its callbacks to the loop. error is copied. */
void evmpi__future_complete(evmpi_future_t *f, int status, const char *error,
                            const evmpi_tensor_t *value, size_t nvalue);
/* Runs f's pending callbacks; called on the loop thread by the bridge
 * (or inline once the group is gone). Drops the delivery's reference. */
void evmpi__future_deliver(evmpi_future_t *f);

/* ---- op_table.c: what each operation is ------------------------------------ */

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
/* Checks a call's arguments (on the submitting thread; sets the last
 * error and returns its status) and fills the plan; nothing is allocated
 * but what the plan owns (alltoall splits). */
typedef int evmpi_prepare_t(const evmpi_op_t *op, evmpi_pg_t *pg, const evmpi_op_call_t *call,
                            evmpi_op_plan_t *plan);
typedef evmpi_prepare_t *evmpi_prepare_fn;

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
  evmpi_prepare_fn prepare; /* collectives; sends and receives check in ops_p2p.c */
  evmpi_run_fn run;         /* collectives, on the worker thread */
  evmpi_chunk_fn run_chunk; /* element-wise ones: a piece, or a staged CUDA chunk */
};

/* Every operation, indexed by its id. */
extern const evmpi_op_t evmpi__ops[EVMPI_OP_COUNT];

/* ---- ops_*.c: each operation's prepare, run and chunk functions, which
 * op_table.c names (op_submit.c has the public entry points) ----------- */

/* ops_collective.c: allreduce, reduce and broadcast share prepare and run
 * (pieces of the tensor, each to the row's chunk function); barrier. */
evmpi_prepare_t evmpi__prepare_elementwise, evmpi__prepare_barrier;
evmpi_run_t evmpi__run_elementwise, evmpi__run_barrier;
evmpi_chunk_t evmpi__broadcast_chunk;
/* ops_reduce.c */
evmpi_chunk_t evmpi__allreduce_chunk, evmpi__reduce_chunk;
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

/* ---- work.c ------------------------------------------------------------ */

struct evmpi_work {
  evmpi_ref_t ref;
  evmpi_pg_t *pg;             /* a ref */
  const evmpi_op_t *op;       /* what it is: its row of evmpi__ops */
  evmpi_work_kind_t kind;     /* op->kind, which the engines test on every completion */
  evmpi_work_state_t state;   /* under the owning queue's lock */
  uint64_t seq;               /* per group, from 1 */
  atomic_bool finished;       /* set once, by whoever completes the work */
  int64_t t_queued;           /* ns, CLOCK_MONOTONIC, set before publication */
  _Atomic int64_t t_started, t_finished; /* ns; 0 = not yet */
  /* arguments, copied at submission (op_submit.c from the plan, or ops_p2p.c) */
  evmpi_tensor_t *tensors;    /* descriptors; outputs are tensors[0..noutputs) */
  size_t ntensors, noutputs;
  int64_t numel;              /* see evmpi_op_plan_t.numel */
  evmpi_op_args_t args;       /* the member op->args names */
  /* where the tensors are: one device per work (evmpi__work_place) */
  evmpi_device_t device;
  /* CUDA staging (cuda_stage.c): outputs that the operation also reads
   * (copied in as well as out); for one-tensor element-wise collectives
   * (op->run_chunk), whether this rank's chunks are copied in and out */
  bool outputs_read;
  bool host_access;           /* device tensors only: run reads or writes the data
                                 itself (packing, avg division, float16 ops), so
                                 it is staged even with a CUDA-aware MPI */
  bool chunk_in, chunk_out;
  size_t piece_bytes;         /* run_chunk's operations go to MPI in pieces of this */
  /* point to point */
  MPI_Request request;
  void *p2p_stage;            /* staged CUDA send or receive: its pinned buffer */
  int64_t recv_bytes;         /* a receive's arrived bytes (poller), -1 = unknown */
  bool abandoned;             /* request freed while pending: MPI may still use p2p_stage */
  bool cancel_sent;           /* poller: MPI_Cancel was called on its receive */
  bool held;                  /* poller: its request completed, but an older send or
                                 receive of the same peer and tag has not: it is
                                 finished after that one (MPI's matching order) */
  /* p2p deadline (poller.c): when it times out (evmpi__now_ns, 0 = never),
   * from the group's p2p timeout at issue or evmpi_work_set_deadline; set
   * under the poller's mu, read by the poller under it */
  int64_t p2p_deadline_ns;
  int p2p_timeout_ms;         /* the timeout that deadline came from, for messages */
  atomic_int source_rank;
  /* result */
  char *error_text;           /* set by the thread that finishes the work */
  int outcome;                /* poller: status of a finished request */
  evmpi_work_t *next;         /* worker queue or poller list */
  evmpi_future_t future;      /* embedded; shares refs */
  evmpi_tensor_t inline_tensors[1];
};

/* The inputs of a work: its tensors after the outputs. */
static inline evmpi_tensor_t *evmpi__work_inputs(evmpi_work_t *w) {
  return w->tensors + w->noutputs;
}

/* A new work of op with ntensors descriptor slots, refs = 2 (the caller's
 * and the group's in-flight one). EVMPI_ERR_NOMEM sets the last error. */
int evmpi__work_new(evmpi_pg_t *pg, const evmpi_op_t *op, size_t ntensors, evmpi_work_t **out);
/* Frees a work that was never queued (both refs). */
void evmpi__work_discard(evmpi_work_t *w);
static inline void evmpi__work_retain(evmpi_work_t *w) { evmpi__ref_get(&w->ref); }
/* Completes the work: status, message (error_text or a copy of msg), result
 * tensors, future. Then drops the in-flight reference. */
void evmpi__work_finish(evmpi_work_t *w, int status, const char *msg);
/* The same, with the finish time already read (0: read it here). */
void evmpi__work_finish_at(evmpi_work_t *w, int status, const char *msg, int64_t now_ns);
/* Records an MPI failure of call rc as the work's message and returns
 * EVMPI_ERR_MPI. */
int evmpi__work_mpi_error(evmpi_work_t *w, const char *call, int rc);
/* EVMPI_OK for MPI_SUCCESS, else the failure of the operation's own MPI
 * call (op->mpi_call) recorded as by evmpi__work_mpi_error. */
int evmpi__work_mpi_result(evmpi_work_t *w, int rc);
/* Records a failure with a formatted message and returns status. */
int evmpi__work_fail(evmpi_work_t *w, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sets w->device from its tensors and checks that the group can move
 * them (CUDA path); before anything is queued or issued. */
int evmpi__work_place(evmpi_work_t *w);

/* ---- pieces.c: large element-wise collectives in pieces -------------------- */

/* Reads EVMPI_PIECE (default 1 MiB; a power of two in 16 B..1 GiB) into
 * pg->piece_bytes; EVMPI_ERR_INVALID naming the variable otherwise. */
int evmpi__pieces_configure(const char *op, evmpi_pg_t *pg);
/* Whether v is a power of two in lo..hi (EVMPI_PIECE, EVMPI_CUDA_CHUNK). */
bool evmpi__pow2_in(size_t v, size_t lo, size_t hi);
/* The largest message that goes to MPI whole (4 pieces), and a
 * broadcast's piece: a multiple of every cut, so that a staged chunk can
 * be rounded to it. */
size_t evmpi__whole_max_bytes(const evmpi_pg_t *pg);
/* Elements per MPI call for a message of total elements of esz bytes cut
 * in pieces of piece_bytes: all of them up to evmpi__whole_max_bytes. */
int64_t evmpi__cut_elems(const evmpi_pg_t *pg, size_t piece_bytes, size_t esz,
                         int64_t total);
/* Runs fn on numel elements at data (element offset off into tensors[0])
 * in pieces of w->piece_bytes, yielding the CPU between pieces. The cut
 * is the same on every rank for the same numel. */
int evmpi__run_pieces(evmpi_work_t *w, evmpi_chunk_fn fn, void *data, int64_t off,
                      int64_t numel);

/* ---- cuda.c, cuda_stage.c: CUDA device tensors (EVMPI_HAVE_CUDA) ------------ */

/* Chooses a new group's CUDA path and chunk size from the EVMPI_CUDA_*
 * variables; EVMPI_ERR_INVALID names a variable with a bad value. Runs
 * after evmpi__pieces_configure: a chunk is a whole number of pieces. */
int evmpi__cuda_configure(const char *op, evmpi_pg_t *pg);
#ifdef EVMPI_HAVE_CUDA
typedef struct evmpi_stager evmpi_stager_t;
/* Checks a CUDA tensor's device index and that its data is on it. */
int evmpi__cuda_check_tensor(const char *op, const char *arg, const evmpi_tensor_t *t,
                             int64_t numel);
/* Runs a collective whose tensors are on a CUDA device (worker thread). */
int evmpi__cuda_run(evmpi_work_t *w);
/* A send or receive of a CUDA tensor: the buffer to give MPI (the device
 * pointer on the direct path, a pinned host buffer, filled for a send, on
 * the staged one). The device is made current on the calling thread
 * until evmpi__cuda_p2p_leave. */
int evmpi__cuda_p2p_enter(evmpi_work_t *w, void **buf, int *saved_device);
void evmpi__cuda_p2p_leave(int saved_device);
/* The calling thread's current device, or -1 when the runtime cannot say.
 * Every function of cuda.c and cuda_stage.c that sets a device gives the
 * caller's back (evmpi__cuda_restore_device): the worker, the poller, the
 * loop thread and the application's threads all keep their own. */
int evmpi__cuda_current_device(void);
/* Makes saved current again after set was made current (nothing when they
 * are the same or saved is -1). */
void evmpi__cuda_restore_device(int saved, int set);
/* At completion: copies an arrived message to the device, frees the pinned
 * buffer (unless MPI may still use it); may turn status into
 * EVMPI_ERR_CUDA. */
int evmpi__cuda_p2p_finish(evmpi_work_t *w, int status);
/* Frees a pinned buffer whose request was never issued. */
void evmpi__cuda_p2p_discard(evmpi_work_t *w);
void evmpi__stager_free(evmpi_stager_t *s);
#endif

/* ---- bridge.c: completions to the loop --------------------------------- */

typedef struct evmpi_bridge evmpi_bridge_t;

/* A loop that watches a bridge's fd (loop_event.c has libevent's and the
 * group's own loop thread's): pg.c chooses one, the bridge calls it. */
typedef struct evmpi_loop_ops {
  /* At open: watch b's fd (in base, or in a loop of the group's own). */
  int (*attach)(evmpi_bridge_t *b, struct event_base *base, evmpi_pg_t *pg);
  /* At close, before the fd is closed: stop watching it. */
  void (*detach)(evmpi_bridge_t *b);
  /* The group's own loop thread only: after close (self: on that thread,
   * from a callback), and joining it, waiting until deadline_ns at most. */
  void (*closed)(evmpi_bridge_t *b, bool self);
  void (*join)(evmpi_bridge_t *b, int64_t deadline_ns);
} evmpi_loop_ops_t;

struct evmpi_bridge {
  const evmpi_loop_ops_t *loop; /* NULL for an external loop */
  void (*teardown)(evmpi_pg_t *pg); /* pg.c's: a callback destroyed the group */
  struct event_base *base;  /* libevent's (loop_event.c), NULL for an external loop */
  struct event *ev;         /* on efd in base, NULL for an external loop */
  int efd;                  /* evmpi_pg_fd: readable while completions wait */
  atomic_bool attached;     /* open succeeded, close has not begun (evmpi_pg_fd
                               reads it on any thread) */
  bool external;            /* EVMPI_LOOP_EXTERNAL: the application dispatches */
  void (*detach_cb)(evmpi_pg_t *, void *); /* external: evmpi_pg_set_detach's */
  evmpi_pg_t *detach_pg;
  void *detach_arg;
  int64_t p2p_poll_ns;      /* EVMPI_LOOP_P2P_POLL_US: the polling window while
                               sends and receives are active */
  int64_t hold_ns;          /* EVMPI_LOOP_HOLD_US: the most one wake-up holds
                               the loop */
  bool own_loop;            /* base and thread are ours (NULL base given) */
  pthread_t loop_thread;
  pthread_mutex_t mu;
  bool stop;                /* under mu: own loop should exit */
  bool dead;                /* under mu: no loop any more, deliver inline */
  bool dispatching;         /* loop thread only */
  bool destroy_requested;   /* loop thread only */
  bool made;                /* mu is made (bridge_fini destroys it) */
  evmpi_future_sink_t sink; /* what the group's futures post to */
  atomic_bool halted;       /* MPI is being finalized: no callback runs again */
  /* The delivery list is lock-free (bridge.c says why): posters push onto
   * `posted` (newest first) with a CAS, the loop thread takes it whole. */
  _Atomic(evmpi_future_t *) posted;
  atomic_bool signalled;    /* eventfd written, or the loop is draining */
  atomic_bool closed;       /* close has begun: posters deliver inline */
  atomic_int posting;       /* posters between their closed check and the
                               end of their eventfd write */
};

/* Opens the core and attaches it to loop (NULL: EVMPI_LOOP_EXTERNAL, the
 * application watches the fd), giving it base. teardown is run after a
 * batch in which a callback destroyed the group. */
int evmpi__bridge_open(evmpi_bridge_t *b, evmpi_pg_t *pg, const evmpi_loop_ops_t *loop,
                       struct event_base *base, void (*teardown)(evmpi_pg_t *pg));
/* The core of evmpi_pg_dispatch, for the adapters: runs what is posted,
 * in batches, and polls on within the group's windows; returns how many
 * futures it delivered. *gone: a callback destroyed the group, which is
 * now torn down (pg must not be touched). */
int evmpi__bridge_dispatch(evmpi_pg_t *pg, bool *gone);
/* Destroy or MPI_Finalize wants the group's own loop thread to stop. */
bool evmpi__bridge_stopping(evmpi_bridge_t *b);
/* Frees what open made, once the group's last reference is gone. */
void evmpi__bridge_fini(evmpi_bridge_t *b);
/* MPI is being finalized: no callback runs from now on (what is posted
 * stays posted), and our own loop thread is stopped and joined, waiting
 * until deadline_ns at most, unless it is the calling thread. The
 * application's event is left alone: its base may be gone already. */
void evmpi__bridge_halt(evmpi_bridge_t *b, int64_t deadline_ns);
/* Hands f to the loop (the caller has taken a reference for it); false when
 * the loop is gone, and the caller delivers f itself. */
bool evmpi__bridge_post(evmpi_bridge_t *b, evmpi_future_t *f);
/* Delivers what is left, then detaches from the loop (and stops our own
 * loop thread). Called by destroy, on the loop thread; once. */
void evmpi__bridge_close(evmpi_bridge_t *b);
bool evmpi__bridge_on_loop_thread(evmpi_bridge_t *b);

/* ---- loop_event.c: the libevent adapters ---------------------------------- */

/* libevent's event on the fd in the application's event_base, and the
 * group's own event_base with the thread that runs it (a NULL base). */
extern const evmpi_loop_ops_t evmpi__loop_event_ops;
extern const evmpi_loop_ops_t evmpi__loop_thread_ops;

/* ---- worker.c: collectives in order ------------------------------------ */

typedef struct evmpi_worker {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;         /* work queued, or closing */
  pthread_cond_t wd_cv;      /* the watchdog's: a work started or ended, or stop */
  pthread_cond_t exit_cv;    /* CLOCK_MONOTONIC: the thread left, or the group broke */
  evmpi_work_t *head, *tail; /* under mu */
  evmpi_work_t *running;     /* under mu: the collective in MPI now */
  uint64_t running_seq;      /* under mu: its sequence number (0 = none); works are
                                pooled, so the watchdog knows it by this, not by pointer */
  int64_t running_deadline;  /* under mu: ns when it times out, fixed when it
                                started (0 = no limit) */
  int running_timeout_ms;    /* under mu: the timeout that deadline came from */
  int timeout_ms;            /* under mu: 0 = none; for collectives that start later */
  char *broken;              /* under mu: why the group is broken, or NULL */
  bool closing;              /* under mu */
  bool waiting;              /* under mu: asleep on cv (submit must signal) */
  atomic_int queued;         /* works in the queue, read without mu while spinning */
  atomic_bool in_mpi;        /* a collective is running (the loop thread yields to it) */
  bool made;                 /* its mutex and condition variables are made */
  bool started;
  bool stopped;              /* evmpi__worker_stop has run; clean is its answer */
  bool clean;
  bool detached;             /* under mu: stop left it stuck in MPI */
  bool exited;               /* under mu: the thread is leaving */
  bool wd_stop;              /* under mu: the watchdog should leave */
  pthread_t watchdog;
  bool watchdog_started;     /* under mu */
} evmpi_worker_t;

int evmpi__worker_start(evmpi_worker_t *wk, evmpi_pg_t *pg);
/* Sets the operation timeout (starting the watchdog on first use);
 * EVMPI_ERR_ABORTED once the group is closing. */
int evmpi__worker_set_timeout(evmpi_worker_t *wk, evmpi_pg_t *pg, int timeout_ms);
/* The timeout set now (0 = none). */
int evmpi__worker_timeout(evmpi_worker_t *wk);
/* Copies why the group is broken into buf; false when it is not. */
bool evmpi__worker_broken(evmpi_worker_t *wk, char *buf, size_t len);
/* Whether a collective is queued or running: the loop thread's polling
 * then yields the CPU after every empty poll (bridge.c). Without a lock. */
bool evmpi__worker_active(evmpi_worker_t *wk);
/* Queues w (takes the in-flight reference); EVMPI_ERR_ABORTED once closing. */
int evmpi__worker_submit(evmpi_worker_t *wk, evmpi_work_t *w);
/* Removes w if it has not started; true when it did. */
bool evmpi__worker_cancel(evmpi_worker_t *wk, evmpi_work_t *w);
/* Refuses new work, runs what is queued and stops the thread. When
 * deadline_ns (evmpi__now_ns, 0 = none) passes first, the group is broken:
 * the running collective fails with EVMPI_ERR_TIMEOUT, the queue with
 * EVMPI_ERR_ABORTED, and the thread, stuck in MPI, is left to finish on
 * its own. True when the thread stopped cleanly. Runs once; later calls
 * return the first answer. */
bool evmpi__worker_stop(evmpi_worker_t *wk, int64_t deadline_ns);
/* Fails everything queued with EVMPI_ERR_ABORTED and refuses new work. */
void evmpi__worker_fail_queued(evmpi_worker_t *wk, const char *why);
/* Waits up to timeout_ms for the workers that stop left inside MPI
 * (broken groups) to leave it; false when some are still there. */
bool evmpi__worker_wait_detached(int timeout_ms);
/* Frees what start made, once the group's last reference is gone. */
void evmpi__worker_fini(evmpi_worker_t *wk);

/* ---- poller.c: point-to-point requests --------------------------------- */

typedef struct evmpi_poller {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* Taken before mu is released by whoever took finished works out of the
   * arrays, and held while it finishes them: the poller thread and the
   * loop thread both test, and this keeps their completions in the order
   * of their tests (never held while waiting for MPI). */
  pthread_mutex_t finish_mu;
  /* Issued, not yet tested: a lock-free stack, newest first (pushed by
   * the submitting threads, taken whole by whoever adopts under mu), then
   * in issue order in the adopting thread's FIFO until the arrays have
   * room for them. */
  _Atomic(evmpi_work_t *) incoming;
  evmpi_work_t *adopt_head, *adopt_tail; /* under mu */
  atomic_bool sleeping;      /* waiting on cv: a submission must signal */
  atomic_bool refusing;      /* stop has begun: submissions are refused */
  bool stopping;             /* under mu */
  int64_t stop_deadline;     /* under mu: when stopping, abandon sends left after
                                this (evmpi__now_ns; 0 = wait for them) */
  bool exited;               /* under mu: the thread has left */
  /* poller-owned (and abort's, under mu), in the order they were issued */
  MPI_Request *reqs;
  evmpi_work_t **works;
  size_t n, cap;
  size_t nheld;              /* how many of them are held (work.held) */
  bool made;                 /* mu, finish_mu and cv are made */
  bool started;
  bool stopped;              /* evmpi__poller_stop has run */
  /* Until when (evmpi__now_ns) the loop thread polls and tests the
   * requests itself (bridge.c); the poller sleeps rather than spins then. */
  _Atomic int64_t loop_until;
  bool loop_wait;            /* under mu: asleep until loop_until */
  int64_t last_activity;     /* under mu: when a request last finished (on
                                either thread) or was submitted */
  size_t staged;             /* under mu: pending works with a pinned CUDA staging
                                buffer, whose finish copies to the device: while
                                there are any, the loop thread leaves the tests to
                                the poller, so no device copy runs on it */
  /* Deadlines of sends and receives (evmpi_pg_set_p2p_timeout,
   * evmpi_work_set_deadline). */
  size_t large;              /* under mu: pending works of at least LARGE_BYTES
                                (poller.c), whose transfers need MPI's progress */
  int64_t large_bytes;       /* under mu: their bytes in all */
  atomic_int timeout_ms;     /* the group's p2p timeout for works issued from now
                                on (0 = none) */
  int64_t next_deadline;     /* under mu: the earliest deadline of a pending work,
                                INT64_MAX when none; the poller wakes for it */
  char *broken;              /* under mu: why a p2p timeout broke the group, or NULL */
  atomic_bool is_broken;     /* broken != NULL, for submissions to check without mu */
} evmpi_poller_t;

int evmpi__poller_start(evmpi_poller_t *p, evmpi_pg_t *pg);
/* Hands an issued request's work to the poller (takes the in-flight ref). */
int evmpi__poller_submit(evmpi_poller_t *p, evmpi_work_t *w);
/* Cancels a pending receive: EVMPI_OK (completed aborted) or STATE. */
int evmpi__poller_cancel(evmpi_poller_t *p, evmpi_work_t *w);
/* Cancels pending receives, waits for sends until deadline_ns
 * (evmpi__now_ns; 0 = as long as they take) and abandons those left (they
 * fail with EVMPI_ERR_TIMEOUT; MPI may still deliver them), or, with
 * abandon_why, abandons everything at once (EVMPI_ERR_ABORTED with that
 * message); stops and joins the thread. Runs once. */
void evmpi__poller_stop(evmpi_poller_t *p, const char *abandon_why, int64_t deadline_ns);
/* Fails every pending request's work with status and why: receives are
 * cancelled, every request is freed (MPI may still use the buffers). */
void evmpi__poller_fail_pending(evmpi_poller_t *p, int status, const char *why);
/* One test of the pending requests from the calling thread (the loop
 * thread while it polls); never waits for the poller's lock. True when
 * some work completed; *pending says whether requests are left. */
bool evmpi__poller_test(evmpi_poller_t *p, bool *pending);
/* The loop thread has stopped polling (loop_until is in the past): wakes
 * the poller if it sleeps until the end of the loop's window. */
void evmpi__poller_loop_done(evmpi_poller_t *p);
/* Sets the group's p2p timeout for works issued from now on (0 = none). */
void evmpi__poller_set_timeout(evmpi_poller_t *p, int timeout_ms);
/* Sets w's deadline to timeout_ms after its issue (0 = none);
 * EVMPI_ERR_STATE once it has completed. */
int evmpi__poller_set_deadline(evmpi_poller_t *p, evmpi_work_t *w, int timeout_ms);
/* The internal hook for a group broken by a missed p2p deadline: copies
 * why into buf and returns true once one has (new submissions are then
 * refused, destroy abandons pending sends at once). */
bool evmpi__poller_broken(evmpi_poller_t *p, char *buf, size_t len);
/* True once any group of the process was broken by a p2p timeout: a
 * request was left to MPI towards a peer that may be gone, and
 * MPI_Finalize may wait for that peer (the exit path may skip it). */
bool evmpi__p2p_broken_any(void);
/* Frees what start made, once the group's last reference is gone. */
void evmpi__poller_fini(evmpi_poller_t *p);

/* ---- pg.c -------------------------------------------------------------- */

struct evmpi_pg {
  evmpi_ref_t ref;           /* the user's handle + every work and future */
  MPI_Comm comm;
  MPI_Comm internal;         /* a second duplicate, for evmpi's own messages
                                (list alltoall), never seen by user tags */
  int rank, size;
  int tag_ub;                /* MPI_TAG_UB of comm */
  atomic_bool closing;       /* destroy started: submissions refused */
  atomic_int submitting;     /* sends and receives between their closing check and
                                their hand-over to the poller (see pg_close_gate) */
  atomic_int phase;          /* EVMPI_PG_LIVE .. EVMPI_PG_STOPPED (groups.c) */
  pthread_t teardown_thread; /* who runs the teardown, once phase is RUNNING */
  atomic_uint_fast64_t next_seq;
  atomic_int inflight;       /* submitted works not yet completed */
  evmpi_cuda_path_t cuda_path; /* how device tensors move, fixed at creation */
  size_t piece_bytes;        /* allreduce/reduce/broadcast go to MPI in pieces of this */
  size_t cuda_chunk;         /* bytes per staged pipeline chunk, a multiple of it */
  evmpi_settings_t settings; /* what it was created with (options.c) */
#ifdef EVMPI_HAVE_CUDA
  evmpi_stager_t *stager;    /* the worker's pinned buffers and streams, lazily */
#endif
  /* groups.c's registry, under its lock */
  evmpi_pg_t *reg_prev, *reg_next;
  bool registered;
  evmpi_bridge_t bridge;
  evmpi_worker_t worker;
  evmpi_poller_t poller;
};

static inline void evmpi__pg_retain(evmpi_pg_t *pg) { evmpi__ref_get(&pg->ref); }
static inline void evmpi__pg_release(evmpi_pg_t *pg) { evmpi__ref_put(&pg->ref); }
/* The real teardown, once destroy has claimed it: engines stopped (within
 * the group timeout when one is set), leftover callbacks delivered,
 * communicators freed, the group unregistered and the user's reference
 * dropped. The bridge calls it after a batch when a callback asked for
 * destroy. */
void evmpi__pg_teardown(evmpi_pg_t *pg);
/* MPI is being finalised with pg alive (claimed by the caller): its
 * engines stop without running any more callbacks (groups.c). */
void evmpi__pg_stop_at_finalize(evmpi_pg_t *pg, int64_t deadline_ns);
/* MPI initialised (evmpi__mpi_ensure_init) with the groups' finalize hooks. */
int evmpi__pg_mpi_init(void);
/* Common submission checks: pg and out not NULL, group not closing. */
int evmpi__pg_check(const char *op, evmpi_pg_t *pg, evmpi_work_t **out);
int evmpi__pg_check_rank(const char *op, const char *arg, const evmpi_pg_t *pg, int rank);
/* A send or receive enters (false: the group is closing, the last error is
 * set) and leaves the section in which it calls MPI on the group's
 * communicator; destroy waits for those inside before it frees it. */
bool evmpi__pg_enter_submit(const char *op, evmpi_pg_t *pg);
void evmpi__pg_leave_submit(evmpi_pg_t *pg);

/* ---- groups.c: every live group of the process ------------------------- */

void evmpi__groups_add(evmpi_pg_t *pg);
/* Its teardown has finished: waiters in evmpi_pg_wait_destroyed and
 * finalize go on. */
void evmpi__groups_remove(evmpi_pg_t *pg);
/* A group's way to its end, one way only, each step taken by one caller
 * with a compare-and-swap: destroy claims it (DEFERRED while a callback's
 * batch finishes), the teardown runs it (RUNNING), or MPI_Finalize stops a
 * group that is LIVE or DEFERRED (STOPPED: its later teardown does
 * nothing, its threads and MPI are gone). */
enum { EVMPI_PG_LIVE, EVMPI_PG_DEFERRED, EVMPI_PG_RUNNING, EVMPI_PG_STOPPED };
/* destroy: LIVE -> DEFERRED; true for the one caller that gets it. */
bool evmpi__groups_claim(evmpi_pg_t *pg);
/* The teardown starts: DEFERRED -> RUNNING; false when finalize stopped
 * the group first. */
bool evmpi__groups_begin_teardown(evmpi_pg_t *pg);
/* Before MPI_Finalize: stops every live group with stop (pg.c's
 * evmpi__pg_stop_at_finalize, given from above so that the registry calls
 * no module above it) and waits for teardowns under way, for at most
 * wait_ms in all; false when one was still running (a thread of it may
 * still be in MPI). */
bool evmpi__groups_stop_all(int wait_ms, void (*stop)(evmpi_pg_t *pg, int64_t deadline_ns));
/* Whether a group of the process was broken by a timeout (a peer may be
 * unreachable, and MPI_Finalize may wait for it): one still registered
 * whose collective timed out, or any whose send or receive missed its
 * deadline. The exit path bounds MPI_Finalize then. */
bool evmpi__groups_any_broken(void);

#endif /* EVMPI_INTERNAL_H */
