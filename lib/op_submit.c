/* op_submit.c: every public operation and their one submit path. Each
 * entry point packs its arguments into a call; submit checks the group,
 * has the operation's prepare check the call and plan the work, then
 * fills the work from the plan and the operation's row (op_table.c) and
 * queues it for the worker, or, for a send or a receive, has the row's
 * issue start it at once. Nothing is queued, and nothing is left
 * allocated, when any check fails. */
#include "op_table-internal.h"
#include "pg-internal.h"
#include "pieces-internal.h"
#include "poller-internal.h"
#include "status-internal.h"
#include "work-internal.h"
#include "worker-internal.h"

#include <stdlib.h>
#include <string.h>

static void copy_tensors(evmpi_tensor_t *to, const evmpi_tensor_t *from, size_t n) {
  if (n)
    memcpy(to, from, n * sizeof *from);
}

/* The staging fields of a work, from its row's flags and this rank's
 * place: what a staged CUDA tensor is copied in and out for. */
static void plan_staging(evmpi_work_t *w, const evmpi_op_plan_t *p) {
  unsigned f = w->op->flags;
  bool root = (f & EVMPI_OPF_ROOTED) && w->pg->rank == p->args.coll.root;
  w->outputs_read = (f & EVMPI_OPF_IN_PLACE) && (!(f & EVMPI_OPF_FROM_ROOT) || root);
  w->chunk_in = w->outputs_read;
  w->chunk_out = !((f & EVMPI_OPF_TO_ROOT) && !root) && !((f & EVMPI_OPF_FROM_ROOT) && root);
  w->host_access = p->host_access || (f & EVMPI_OPF_HOST_ACCESS);
  w->piece_bytes =
      (f & EVMPI_OPF_WHOLE_PIECES) ? evmpi__whole_max_bytes(w->pg) : w->pg->piece_bytes;
}

static int submit(evmpi_op_id_t id, evmpi_pg_t *pg, const evmpi_op_call_t *call,
                  evmpi_work_t **out) {
  const evmpi_op_t *op = &evmpi__ops[id];
  evmpi_op_plan_t p = {.numel = -1};
  if (op->args == EVMPI_ARGS_COLL)
    p.args.coll.root = -1;
  evmpi_work_t *w;
  int rc = evmpi__pg_check(op->opname, pg, out);
  if (rc == EVMPI_OK)
    rc = op->prepare(op, pg, call, &p);
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, op, p.noutputs + p.ninputs, &w);
  if (rc != EVMPI_OK) {
    if (op->args == EVMPI_ARGS_ALLTOALL)
      free(p.args.alltoall.splits);
    return rc;
  }
  copy_tensors(w->tensors, p.outputs, p.noutputs);
  copy_tensors(w->tensors + p.noutputs, p.inputs, p.ninputs);
  w->noutputs = p.noutputs;
  w->numel = p.numel;
  w->args = p.args; /* the work owns what the plan did */
  if (op->issue) {
    rc = op->issue(w);
  } else {
    plan_staging(w, &p);
    rc = evmpi__worker_submit(&pg->worker, w);
  }
  if (rc != EVMPI_OK) {
    evmpi__work_discard(w);
    return rc;
  }
  *out = w;
  return EVMPI_OK;
}

int evmpi_allreduce(evmpi_pg_t *pg, evmpi_tensor_t *tensor, evmpi_reduce_op_t op,
                    evmpi_work_t **out) {
  return submit(EVMPI_OP_ALLREDUCE, pg, &(evmpi_op_call_t){.output = tensor, .op = op}, out);
}

int evmpi_reduce(evmpi_pg_t *pg, evmpi_tensor_t *tensor, evmpi_reduce_op_t op, int root,
                 evmpi_work_t **out) {
  evmpi_op_call_t c = {.output = tensor, .op = op, .root = root};
  return submit(EVMPI_OP_REDUCE, pg, &c, out);
}

int evmpi_broadcast(evmpi_pg_t *pg, evmpi_tensor_t *tensor, int root, evmpi_work_t **out) {
  return submit(EVMPI_OP_BROADCAST, pg, &(evmpi_op_call_t){.output = tensor, .root = root}, out);
}

int evmpi_barrier(evmpi_pg_t *pg, evmpi_work_t **out) {
  return submit(EVMPI_OP_BARRIER, pg, &(evmpi_op_call_t){0}, out);
}

int evmpi_reduce_scatter(evmpi_pg_t *pg, evmpi_tensor_t *output, const evmpi_tensor_t *inputs,
                         evmpi_reduce_op_t op, evmpi_work_t **out) {
  evmpi_op_call_t c = {.output = output, .inputs = inputs, .op = op};
  return submit(EVMPI_OP_REDUCE_SCATTER, pg, &c, out);
}

int evmpi_allreduce_coalesced(evmpi_pg_t *pg, evmpi_tensor_t *tensors, size_t count,
                              evmpi_reduce_op_t op, evmpi_work_t **out) {
  evmpi_op_call_t c = {.outputs = tensors, .count = count, .op = op};
  return submit(EVMPI_OP_ALLREDUCE_COALESCED, pg, &c, out);
}

int evmpi_allgather(evmpi_pg_t *pg, evmpi_tensor_t *outputs, const evmpi_tensor_t *input,
                    evmpi_work_t **out) {
  evmpi_op_call_t c = {.outputs = outputs, .input = input};
  return submit(EVMPI_OP_ALLGATHER, pg, &c, out);
}

int evmpi_allgather_base(evmpi_pg_t *pg, evmpi_tensor_t *output, const evmpi_tensor_t *input,
                         evmpi_work_t **out) {
  evmpi_op_call_t c = {.output = output, .input = input};
  return submit(EVMPI_OP_ALLGATHER_BASE, pg, &c, out);
}

int evmpi_allgather_coalesced(evmpi_pg_t *pg, evmpi_tensor_t *outputs,
                              const evmpi_tensor_t *inputs, size_t count, evmpi_work_t **out) {
  evmpi_op_call_t c = {.outputs = outputs, .inputs = inputs, .count = count};
  return submit(EVMPI_OP_ALLGATHER_COALESCED, pg, &c, out);
}

int evmpi_gather(evmpi_pg_t *pg, evmpi_tensor_t *outputs, const evmpi_tensor_t *input, int root,
                 evmpi_work_t **out) {
  evmpi_op_call_t c = {.outputs = outputs, .input = input, .root = root};
  return submit(EVMPI_OP_GATHER, pg, &c, out);
}

int evmpi_scatter(evmpi_pg_t *pg, evmpi_tensor_t *output, const evmpi_tensor_t *inputs, int root,
                  evmpi_work_t **out) {
  evmpi_op_call_t c = {.output = output, .inputs = inputs, .root = root};
  return submit(EVMPI_OP_SCATTER, pg, &c, out);
}

int evmpi_alltoall_base(evmpi_pg_t *pg, evmpi_tensor_t *output, const evmpi_tensor_t *input,
                        const int64_t *output_splits, const int64_t *input_splits,
                        evmpi_work_t **out) {
  evmpi_op_call_t c = {.output = output, .input = input, .output_splits = output_splits,
                       .input_splits = input_splits};
  return submit(EVMPI_OP_ALLTOALL_BASE, pg, &c, out);
}

int evmpi_alltoall(evmpi_pg_t *pg, evmpi_tensor_t *outputs, const evmpi_tensor_t *inputs,
                   evmpi_work_t **out) {
  evmpi_op_call_t c = {.outputs = outputs, .inputs = inputs};
  return submit(EVMPI_OP_ALLTOALL, pg, &c, out);
}

int evmpi_send(evmpi_pg_t *pg, const evmpi_tensor_t *tensor, int dst, int tag, evmpi_work_t **out) {
  evmpi_op_call_t c = {.input = tensor, .peer = dst, .tag = tag};
  return submit(EVMPI_OP_SEND, pg, &c, out);
}

int evmpi_recv(evmpi_pg_t *pg, evmpi_tensor_t *tensor, int src, int tag, evmpi_work_t **out) {
  evmpi_op_call_t c = {.output = tensor, .peer = src, .tag = tag};
  return submit(EVMPI_OP_RECV, pg, &c, out);
}

int evmpi_recv_anysource(evmpi_pg_t *pg, evmpi_tensor_t *tensor, int tag, evmpi_work_t **out) {
  evmpi_op_call_t c = {.output = tensor, .tag = tag};
  return submit(EVMPI_OP_RECV_ANYSOURCE, pg, &c, out);
}

/* A queued collective leaves the worker's queue; a pending receive is
 * cancelled by the poller; a send cannot be taken back. */
int evmpi_work_abort(evmpi_work_t *w) {
  if (!w)
    return evmpi__fail(EVMPI_ERR_INVALID, "work_abort: work is NULL");
  switch (w->kind) {
  case EVMPI_WORK_COLLECTIVE:
    if (evmpi__worker_cancel(&w->pg->worker, w))
      return EVMPI_OK;
    return evmpi__fail(EVMPI_ERR_STATE, "work_abort: %s (#%llu) has already started", w->op->name,
                       (unsigned long long)w->seq);
  case EVMPI_WORK_RECV:
    return evmpi__poller_cancel(&w->pg->poller, w);
  case EVMPI_WORK_SEND:
    break;
  }
  return evmpi__fail(EVMPI_ERR_STATE, "work_abort: %s (#%llu) cannot be cancelled once issued",
                     w->op->name, (unsigned long long)w->seq);
}
