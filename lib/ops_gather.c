/* ops_gather.c: data movement without reduction: allgather, gather and
 * scatter (a tensor per rank to or from one tensor: one prepare, one run),
 * allgather_base (one flat output) and allgather_coalesced. Each rank's
 * block travels as one MPI element pair from evmpi__block_make, so counts
 * beyond INT_MAX need no chunking. Per-rank tensors that lie back to back
 * in memory are used directly; others go through one packing buffer. */
#include "ops-internal.h"
#include "bigcount-internal.h"
#include "pg-internal.h"
#include "status-internal.h"
#include "tensor-internal.h"
#include "work-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* True when list[0..n) lies back to back from list[0].data, bytes each. */
static bool adjacent(const evmpi_tensor_t *list, int n, size_t bytes) {
  for (int r = 1; r < n; r++)
    if ((const char *)list[r].data != (const char *)list[0].data + (size_t)r * bytes)
      return false;
  return true;
}

static void *pack_alloc(evmpi_work_t *w, size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p)
    evmpi__work_fail(w, EVMPI_ERR_NOMEM, "cannot allocate %zu bytes for packing", bytes);
  return p;
}

/* ---- allgather, gather, scatter ---------------------------------------------
 * The list (a tensor per rank) is allgather's and gather's outputs and
 * scatter's inputs, on every rank for allgather and on the root only for
 * the others; the single tensor is the input, or scatter's output. */

/* Root-only list arguments: required on the root, NULL elsewhere. */
static int check_root_list(const char *op, const char *arg, const evmpi_pg_t *pg, int root,
                           const evmpi_tensor_t *list) {
  if (pg->rank != root && list)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s must be NULL on non-root rank %d (the root is "
                       "rank %d)", op, arg, pg->rank, root);
  if (pg->rank == root && !list)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s is NULL on the root (rank %d)", op, arg, root);
  return EVMPI_OK;
}

int evmpi__prepare_per_rank(const evmpi_op_t *op, evmpi_pg_t *pg, const evmpi_op_call_t *c,
                            evmpi_op_plan_t *p) {
  const char *opname = op->opname;
  bool scatter = op->flags & EVMPI_OPF_FROM_ROOT;
  bool rooted = op->flags & EVMPI_OPF_ROOTED;
  const char *one = scatter ? "output" : "input", *many = scatter ? "inputs" : "outputs";
  const evmpi_tensor_t *single = scatter ? c->output : c->input;
  const evmpi_tensor_t *list = scatter ? c->inputs : c->outputs;
  int rc = evmpi__check_tensor(opname, one, single, &p->numel);
  if (rc == EVMPI_OK)
    rc = evmpi__check_group_bytes(opname, one, p->numel, single->dtype, pg->size);
  if (rc == EVMPI_OK && rooted)
    rc = evmpi__pg_check_rank(opname, "root", pg, c->root);
  if (rc == EVMPI_OK && rooted)
    rc = check_root_list(opname, many, pg, c->root, list);
  bool has_list = rc == EVMPI_OK && (!rooted || pg->rank == c->root);
  if (has_list)
    rc = evmpi__check_list(opname, many, list, pg->size, one, single, p->numel);
  if (rc != EVMPI_OK)
    return rc;
  size_t nlist = has_list ? (size_t)pg->size : 0;
  p->args.coll.root = rooted ? c->root : -1;
  p->outputs = scatter ? single : list;
  p->noutputs = scatter ? 1 : nlist;
  p->inputs = scatter ? list : single;
  p->ninputs = scatter ? nlist : 1;
  /* Packing matters only to a device tensor, which then must not go to a
   * CUDA-aware MPI as it is; host tensors skip the scan. */
  p->host_access = nlist && single->device.type == EVMPI_DEVICE_CUDA &&
                   !adjacent(list, pg->size, (size_t)p->numel * evmpi_dtype_size(single->dtype));
  return EVMPI_OK;
}

/* The operation's MPI call on whole per-rank blocks b. */
static int exchange(evmpi_work_t *w, const void *send, void *recv, const evmpi_block_t *b) {
  MPI_Comm comm = w->pg->comm;
  int root = w->args.coll.root;
  switch (w->op->id) {
  case EVMPI_OP_GATHER:
    return MPI_Gather(send, b->count, b->type, recv, b->count, b->type, root, comm);
  case EVMPI_OP_SCATTER:
    return MPI_Scatter(send, b->count, b->type, recv, b->count, b->type, root, comm);
  default:
    return MPI_Allgather(send, b->count, b->type, recv, b->count, b->type, comm);
  }
}

int evmpi__run_per_rank(evmpi_work_t *w) {
  bool scatter = w->op->flags & EVMPI_OPF_FROM_ROOT;
  int size = w->pg->size, rank = w->pg->rank;
  evmpi_tensor_t *single = scatter ? &w->tensors[0] : evmpi__work_inputs(w);
  evmpi_tensor_t *list = scatter ? evmpi__work_inputs(w) : w->tensors;
  bool has_list = (scatter ? w->ntensors - w->noutputs : w->noutputs) > 0;
  size_t bytes = (size_t)w->numel * evmpi_dtype_size(single->dtype);
  evmpi_block_t b;
  int rc = evmpi__block_make(w->numel, single->dtype, &b);
  if (rc != MPI_SUCCESS)
    return evmpi__work_mpi_error(w, "MPI_Type_create_struct", rc);
  int status = EVMPI_OK;
  if (!has_list) { /* a non-root rank of gather or scatter */
    rc = exchange(w, scatter ? NULL : single->data, scatter ? single->data : NULL, &b);
  } else if (adjacent(list, size, bytes)) {
    /* This rank's slot of the list may be the single tensor itself. */
    void *mine = single->data == list[rank].data ? MPI_IN_PLACE : single->data;
    rc = scatter ? exchange(w, list[0].data, mine, &b) : exchange(w, mine, list[0].data, &b);
  } else {
    char *pack = pack_alloc(w, (size_t)size * bytes);
    if (!pack) {
      status = EVMPI_ERR_NOMEM;
    } else if (scatter) {
      for (int r = 0; r < size; r++)
        memcpy(pack + (size_t)r * bytes, list[r].data, bytes);
      void *mine = single->data == list[rank].data ? MPI_IN_PLACE : single->data;
      rc = exchange(w, pack, mine, &b);
    } else {
      rc = exchange(w, single->data, pack, &b);
      for (int r = 0; rc == MPI_SUCCESS && r < size; r++)
        memcpy(list[r].data, pack + (size_t)r * bytes, bytes);
    }
    free(pack);
  }
  evmpi__block_free(&b);
  if (status == EVMPI_OK)
    status = evmpi__work_mpi_result(w, rc);
  return status;
}

/* ---- allgather_base: one flat output ------------------------------------------ */

int evmpi__prepare_allgather_base(const evmpi_op_t *op, evmpi_pg_t *pg, const evmpi_op_call_t *c,
                                  evmpi_op_plan_t *p) {
  int64_t onumel = 0;
  int rc = evmpi__check_pair(op->opname, c->output, c->input, &onumel, &p->numel);
  /* numel * size cannot overflow past this: it would have wrapped to a
   * small count that a small output matched. */
  if (rc == EVMPI_OK)
    rc = evmpi__check_group_bytes(op->opname, "input", p->numel, c->input->dtype, pg->size);
  if (rc == EVMPI_OK && onumel != p->numel * pg->size)
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: output has %lld elements, must be the group size "
                     "(%d) times the input's %lld", op->opname, (long long)onumel, pg->size,
                     (long long)p->numel);
  p->outputs = c->output;
  p->noutputs = 1;
  p->inputs = c->input;
  p->ninputs = 1;
  return rc;
}

int evmpi__run_allgather_base(evmpi_work_t *w) {
  evmpi_tensor_t *out = &w->tensors[0], *in = evmpi__work_inputs(w);
  size_t bytes = (size_t)w->numel * evmpi_dtype_size(in->dtype);
  evmpi_block_t b;
  int rc = evmpi__block_make(w->numel, in->dtype, &b);
  if (rc == MPI_SUCCESS) {
    bool in_place = (char *)in->data == (char *)out->data + (size_t)w->pg->rank * bytes;
    rc = MPI_Allgather(in_place ? MPI_IN_PLACE : in->data, b.count, b.type, out->data, b.count,
                       b.type, w->pg->comm);
  }
  evmpi__block_free(&b);
  return evmpi__work_mpi_result(w, rc);
}

/* ---- allgather_coalesced -------------------------------------------------------
 * The outputs come first, count * size of them (group i for inputs[i]),
 * then the count inputs. Inputs are packed as bytes into one block,
 * gathered with one MPI_Allgather, and unpacked. */

int evmpi__prepare_allgather_coalesced(const evmpi_op_t *op, evmpi_pg_t *pg,
                                       const evmpi_op_call_t *c, evmpi_op_plan_t *p) {
  const char *opname = op->opname;
  const evmpi_tensor_t *inputs = c->inputs;
  size_t count = c->count;
  int rc = EVMPI_OK;
  if (!inputs || !c->outputs)
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: %s is NULL", opname, inputs ? "outputs" : "inputs");
  if (rc == EVMPI_OK && (count == 0 || count > (size_t)INT32_MAX / (size_t)pg->size))
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: count %zu is outside 1..%d", opname, count,
                     INT32_MAX / pg->size);
  for (size_t i = 0; rc == EVMPI_OK && i < count; i++) {
    char name[48], group[48];
    int64_t numel = 0;
    snprintf(name, sizeof name, "inputs[%zu]", i);
    snprintf(group, sizeof group, "outputs[%zu*size..]", i);
    rc = evmpi__check_tensor(opname, name, &inputs[i], &numel);
    if (rc == EVMPI_OK)
      rc = evmpi__check_same_device(opname, name, &inputs[i], "inputs[0]", &inputs[0]);
    if (rc == EVMPI_OK)
      rc = evmpi__check_list(opname, group, &c->outputs[i * (size_t)pg->size], pg->size, name,
                             &inputs[i], numel);
  }
  /* The inputs are packed into one block per rank, gathered from every
   * rank: their bytes, and those times the group size, must fit. */
  int64_t block = 0;
  if (rc == EVMPI_OK)
    rc = evmpi__check_list_bytes(opname, "inputs", inputs, count, &p->numel, &block);
  if (rc == EVMPI_OK)
    rc = evmpi__check_group_bytes(opname, "inputs (packed)", block, EVMPI_UINT8, pg->size);
  p->outputs = c->outputs;
  p->noutputs = count * (size_t)pg->size;
  p->inputs = inputs;
  p->ninputs = count;
  return rc;
}

int evmpi__run_allgather_coalesced(evmpi_work_t *w) {
  int size = w->pg->size;
  size_t count = w->ntensors - w->noutputs;
  evmpi_tensor_t *outs = w->tensors, *ins = evmpi__work_inputs(w);
  size_t block = 0;
  for (size_t i = 0; i < count; i++)
    block += (size_t)evmpi_tensor_numel(&ins[i]) * evmpi_dtype_size(ins[i].dtype);
  char *send = pack_alloc(w, block), *recv = send ? pack_alloc(w, block * (size_t)size) : NULL;
  if (!send || !recv) {
    free(send);
    return EVMPI_ERR_NOMEM;
  }
  size_t at = 0;
  for (size_t i = 0; i < count; i++) {
    size_t bytes = (size_t)evmpi_tensor_numel(&ins[i]) * evmpi_dtype_size(ins[i].dtype);
    memcpy(send + at, ins[i].data, bytes);
    at += bytes;
  }
  evmpi_block_t b;
  int rc = evmpi__block_make((int64_t)block, EVMPI_UINT8, &b);
  if (rc == MPI_SUCCESS)
    rc = MPI_Allgather(send, b.count, b.type, recv, b.count, b.type, w->pg->comm);
  evmpi__block_free(&b);
  at = 0;
  for (int r = 0; rc == MPI_SUCCESS && r < size; r++)
    for (size_t i = 0; i < count; i++) {
      size_t bytes = (size_t)evmpi_tensor_numel(&ins[i]) * evmpi_dtype_size(ins[i].dtype);
      memcpy(outs[i * (size_t)size + (size_t)r].data, recv + at, bytes);
      at += bytes;
    }
  free(send);
  free(recv);
  return evmpi__work_mpi_result(w, rc);
}
