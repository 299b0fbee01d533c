/*
 * work-internal.h: the work: one submitted operation. Private to lib/; names
 * with a double underscore are hidden from the shared library.
 */
#ifndef EVMPI_WORK_INTERNAL_H
#define EVMPI_WORK_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#include <stdatomic.h>

#include "future-internal.h"
#include "op_table-internal.h"
#include "ref-internal.h"

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
  bool gate_carried;          /* its arrival gate carried it (op->carry): run only
                                 finishes it */
  bool ran_on_loop;           /* the loop thread ran it (a collective) or its test saw
                                 it complete (a send or receive): EVMPI_TIMELINE says so */
  /* point to point */
  MPI_Request request;
  void *p2p_stage;            /* staged CUDA send or receive: its pinned buffer */
  int64_t recv_bytes;         /* a receive's arrived bytes (poller), -1 = unknown */
  bool abandoned;             /* request freed while pending: MPI may still use p2p_stage */
  bool cancel_sent;           /* poller: MPI_Cancel was called on its request (once only) */
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
/* The same (no message), with the hand-over of its callbacks added to
 * batch, for evmpi__future_batch_post to make with those of the works
 * finished after it. */
void evmpi__work_finish_batch(evmpi_work_t *w, int status, int64_t now_ns,
                              evmpi_future_batch_t *batch);
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

#endif /* EVMPI_WORK_INTERNAL_H */
