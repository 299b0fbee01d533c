/* ops_reduce.c: the reductions: allreduce's and reduce's chunk functions
 * (ops_collective.c runs them piece by piece), reduce_scatter and
 * allreduce_coalesced. reduce_scatter's counts beyond INT_MAX go in
 * chunks of EVMPI_CHUNK_ELEMS elements. */
#include "ops-internal.h"
#include "bigcount-internal.h"
#include "dtype_mpi-internal.h"
#include "gate-internal.h"
#include "pg-internal.h"
#include "pieces-internal.h"
#include "status-internal.h"
#include "tensor-internal.h"
#include "work-internal.h"

#include <inttypes.h>
#include <sched.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static int chunk_len(int64_t left) {
  return (int)(left < EVMPI_CHUNK_ELEMS ? left : EVMPI_CHUNK_ELEMS);
}

/* The average's division (post_divide) on count elements of the output. */
static void post_divide(evmpi_work_t *w, void *data, int64_t count) {
  if (w->args.coll.post_divide)
    evmpi__divide(data, w->tensors[0].dtype, count, w->pg->size);
}

/* Checks the reduce op on dtype into the plan. */
static int plan_reduce(const evmpi_op_t *op, const evmpi_op_call_t *c, evmpi_dtype_t dtype,
                       evmpi_op_plan_t *p) {
  p->args.coll.op = c->op;
  return evmpi__mpi_reduce_op(op->opname, c->op, dtype, &p->args.coll.mpi_op,
                              &p->args.coll.post_divide);
}

/* In-place allreduce of numel elements at data (a packed coalesced set),
 * piece by piece as evmpi__run_pieces cuts a tensor. */
static int allreduce_span(evmpi_work_t *w, void *data, evmpi_dtype_t dtype, int64_t numel,
                          MPI_Op op) {
  MPI_Datatype dt = evmpi__mpi_datatype(dtype);
  size_t esz = evmpi_dtype_size(dtype);
  int64_t per = evmpi__cut_elems(w->pg, w->piece_bytes, esz, numel);
  char *p = data;
  for (int64_t left = numel; left > 0;) {
    int n = (int)(left < per ? left : per);
    if (left < numel)
      sched_yield();
    int rc = MPI_Allreduce(MPI_IN_PLACE, p, n, dt, op, w->pg->comm);
    if (rc != MPI_SUCCESS)
      return evmpi__work_mpi_result(w, rc);
    p += (size_t)n * esz;
    left -= n;
  }
  return EVMPI_OK;
}

/* ---- allreduce and reduce: one piece (pieces.c), or one chunk of a staged
 * CUDA tensor ---------------------------------------------------------------- */

/* A small allreduce, in a group whose size is a power of two, rides its
 * arrival gate (gate.c): the gate's rounds reduce it. The choice depends
 * on the call and the group only, alike on every rank; a tensor in
 * device memory takes part without its data, and then every rank makes
 * the blocking call after the gate (evmpi__gate_complete). */
int evmpi__allreduce_carry(evmpi_work_t *w, struct evmpi_gate *g, int count, bool quiet,
                           bool *carried) {
  evmpi_pg_t *pg = w->pg;
  evmpi_dtype_t dtype = w->tensors[0].dtype;
  size_t bytes = (size_t)w->numel * evmpi_dtype_size(dtype);
  *carried = (pg->size & (pg->size - 1)) == 0 && w->numel >= 0 && bytes <= EVMPI_GATE_DATA_MAX;
  if (!*carried)
    return MPI_SUCCESS;
  void *data = w->device.type == EVMPI_DEVICE_CPU ? w->tensors[0].data : NULL;
  return evmpi__gate_post_allreduce(g, pg->internal, pg->rank, pg->size, count, quiet, data,
                                    (int)w->numel, evmpi__mpi_datatype(dtype), bytes,
                                    w->args.coll.mpi_op);
}

int evmpi__run_allreduce(evmpi_work_t *w) {
  if (w->gate_carried) { /* reduced by the gate already */
    post_divide(w, w->tensors[0].data, w->numel);
    return EVMPI_OK;
  }
  return evmpi__run_elementwise(w);
}

int evmpi__allreduce_chunk(evmpi_work_t *w, void *data, int64_t off, int count) {
  (void)off;
  int rc = MPI_Allreduce(MPI_IN_PLACE, data, count, evmpi__mpi_datatype(w->tensors[0].dtype),
                         w->args.coll.mpi_op, w->pg->comm);
  if (rc != MPI_SUCCESS)
    return evmpi__work_mpi_result(w, rc);
  post_divide(w, data, count);
  return EVMPI_OK;
}

int evmpi__reduce_chunk(evmpi_work_t *w, void *data, int64_t off, int count) {
  (void)off;
  MPI_Datatype dt = evmpi__mpi_datatype(w->tensors[0].dtype);
  int root = w->args.coll.root;
  bool at_root = w->pg->rank == root;
  /* The root reduces in place; the others' buffers are only read. */
  int rc = MPI_Reduce(at_root ? MPI_IN_PLACE : data, at_root ? data : NULL, count, dt,
                      w->args.coll.mpi_op, root, w->pg->comm);
  if (rc != MPI_SUCCESS)
    return evmpi__work_mpi_result(w, rc);
  if (at_root)
    post_divide(w, data, count);
  return EVMPI_OK;
}

/* ---- reduce_scatter -------------------------------------------------------- */

/* tensors[0] is the output, tensors[1 + r] the input for rank r. Inputs are
 * packed chunk by chunk into one buffer laid out rank after rank, which
 * MPI_Reduce_scatter_block then reduces and scatters. */
int evmpi__run_reduce_scatter(evmpi_work_t *w) {
  evmpi_tensor_t *out = &w->tensors[0];
  const evmpi_tensor_t *in = evmpi__work_inputs(w);
  int size = w->pg->size;
  size_t esz = evmpi_dtype_size(out->dtype);
  MPI_Datatype dt = evmpi__mpi_datatype(out->dtype);
  int64_t first = w->numel < EVMPI_CHUNK_ELEMS ? w->numel : EVMPI_CHUNK_ELEMS;
  char *pack = malloc((size_t)size * (size_t)(first ? first : 1) * esz);
  if (!pack)
    return evmpi__work_fail(w, EVMPI_ERR_NOMEM, "cannot allocate %zu bytes to pack the inputs",
                            (size_t)size * (size_t)first * esz);
  int status = EVMPI_OK;
  for (int64_t off = 0; off < w->numel;) {
    int n = chunk_len(w->numel - off);
    for (int r = 0; r < size; r++)
      memcpy(pack + (size_t)r * (size_t)n * esz, (const char *)in[r].data + (size_t)off * esz,
             (size_t)n * esz);
    int rc = MPI_Reduce_scatter_block(pack, (char *)out->data + (size_t)off * esz, n, dt,
                                      w->args.coll.mpi_op, w->pg->comm);
    if (rc != MPI_SUCCESS) {
      status = evmpi__work_mpi_result(w, rc);
      break;
    }
    off += n;
  }
  free(pack);
  if (status == EVMPI_OK)
    post_divide(w, out->data, w->numel);
  return status;
}

int evmpi__prepare_reduce_scatter(const evmpi_op_t *op, evmpi_pg_t *pg, const evmpi_op_call_t *c,
                                  evmpi_op_plan_t *p) {
  const char *opname = op->opname;
  int rc = evmpi__check_tensor(opname, "output", c->output, &p->numel);
  if (rc == EVMPI_OK)
    rc = evmpi__check_group_bytes(opname, "output", p->numel, c->output->dtype, pg->size);
  if (rc == EVMPI_OK)
    rc = evmpi__check_list(opname, "inputs", c->inputs, pg->size, "output", c->output, p->numel);
  if (rc == EVMPI_OK)
    rc = plan_reduce(op, c, c->output->dtype, p);
  p->outputs = c->output;
  p->noutputs = 1;
  p->inputs = c->inputs;
  p->ninputs = (size_t)pg->size;
  return rc;
}

/* ---- allreduce_coalesced ---------------------------------------------------- */

/* Tensors of one dtype are packed into one buffer and reduced with one
 * call, dtype by dtype in order of first appearance (the same on every
 * rank, as every rank passes the same list). A dtype with one tensor is
 * reduced in place. */
int evmpi__run_allreduce_coalesced(evmpi_work_t *w) {
  size_t n = w->ntensors;
  bool *done = calloc(n ? n : 1, sizeof *done);
  if (!done)
    return evmpi__work_fail(w, EVMPI_ERR_NOMEM, "out of memory");
  int status = EVMPI_OK;
  for (size_t i = 0; i < n && status == EVMPI_OK; i++) {
    if (done[i])
      continue;
    evmpi_dtype_t dt = w->tensors[i].dtype;
    size_t esz = evmpi_dtype_size(dt);
    int64_t total = 0;
    size_t members = 0;
    for (size_t j = i; j < n; j++)
      if (w->tensors[j].dtype == dt) {
        total += evmpi_tensor_numel(&w->tensors[j]);
        members++;
      }
    MPI_Op op;
    bool divide;
    if (evmpi__mpi_reduce_op(w->op->opname, w->args.coll.op, dt, &op, &divide) != EVMPI_OK) {
      status = evmpi__work_fail(w, EVMPI_ERR_UNSUPPORTED, "op is not defined on %s",
                                evmpi__dtype_name(dt));
      break;
    }
    if (members == 1) {
      status = allreduce_span(w, w->tensors[i].data, dt, total, op);
      if (status == EVMPI_OK && divide)
        evmpi__divide(w->tensors[i].data, dt, total, w->pg->size);
      done[i] = true;
      continue;
    }
    char *pack = malloc((size_t)total * esz + 1);
    if (!pack) {
      status = evmpi__work_fail(w, EVMPI_ERR_NOMEM, "cannot allocate %zu bytes to pack %s tensors",
                                (size_t)total * esz, evmpi__dtype_name(dt));
      break;
    }
    size_t at = 0;
    for (size_t j = i; j < n; j++)
      if (w->tensors[j].dtype == dt) {
        size_t bytes = (size_t)evmpi_tensor_numel(&w->tensors[j]) * esz;
        memcpy(pack + at, w->tensors[j].data, bytes);
        at += bytes;
      }
    status = allreduce_span(w, pack, dt, total, op);
    if (status == EVMPI_OK && divide)
      evmpi__divide(pack, dt, total, w->pg->size);
    at = 0;
    for (size_t j = i; j < n; j++)
      if (w->tensors[j].dtype == dt) {
        size_t bytes = (size_t)evmpi_tensor_numel(&w->tensors[j]) * esz;
        if (status == EVMPI_OK)
          memcpy(w->tensors[j].data, pack + at, bytes);
        at += bytes;
        done[j] = true;
      }
    free(pack);
  }
  free(done);
  return status;
}

int evmpi__prepare_allreduce_coalesced(const evmpi_op_t *op, evmpi_pg_t *pg,
                                       const evmpi_op_call_t *c, evmpi_op_plan_t *p) {
  (void)pg;
  const char *opname = op->opname;
  const evmpi_tensor_t *tensors = c->outputs;
  size_t count = c->count;
  int rc = EVMPI_OK;
  if (!tensors)
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: tensors is NULL", opname);
  if (rc == EVMPI_OK && (count == 0 || count > INT32_MAX))
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: count %zu is outside 1..%d", opname, count,
                     INT32_MAX);
  for (size_t i = 0; rc == EVMPI_OK && i < count; i++) {
    char name[48], where[96];
    snprintf(name, sizeof name, "tensors[%zu]", i);
    snprintf(where, sizeof where, "%s: %s", opname, name);
    MPI_Op mop;
    bool divide;
    rc = evmpi__check_tensor(opname, name, &tensors[i], NULL);
    if (rc == EVMPI_OK)
      rc = evmpi__check_same_device(opname, name, &tensors[i], "tensors[0]", &tensors[0]);
    if (rc == EVMPI_OK)
      rc = evmpi__mpi_reduce_op(where, c->op, tensors[i].dtype, &mop, &divide);
  }
  /* Tensors of one dtype are packed into one buffer (and counted
   * together): all of them together must fit INT64_MAX bytes. */
  int64_t bytes;
  if (rc == EVMPI_OK)
    rc = evmpi__check_list_bytes(opname, "tensors", tensors, count, &p->numel, &bytes);
  p->args.coll.op = c->op;
  p->outputs = tensors;
  p->noutputs = count;
  return rc;
}
