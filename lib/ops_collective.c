/* ops_collective.c: the one-tensor element-wise collectives (allreduce,
 * reduce, broadcast: one prepare and one run, which cuts the tensor in
 * pieces and hands each to the operation's chunk function) and barrier.
 * Their rows are in op_table.c; allreduce's and reduce's chunk functions
 * are with the other reductions in ops_reduce.c. */
#include "ops-internal.h"
#include "dtype_mpi-internal.h"
#include "gate-internal.h"
#include "pg-internal.h"
#include "pieces-internal.h"
#include "tensor-internal.h"
#include "work-internal.h"

/* Whether a reduction's run touches the data on the host: an average's
 * division, and the 16-bit float kernels (MPI_Op_create'd functions that
 * MPI calls on the buffers). A CUDA-aware MPI cannot run those on device
 * memory, so such device tensors are staged. */
static bool reduce_touches_host(evmpi_dtype_t dtype, bool post_divide) {
  return post_divide || dtype == EVMPI_FLOAT16 || dtype == EVMPI_BFLOAT16;
}

int evmpi__prepare_elementwise(const evmpi_op_t *op, evmpi_pg_t *pg, const evmpi_op_call_t *c,
                               evmpi_op_plan_t *p) {
  int rc = evmpi__check_tensor(op->opname, "tensor", c->output, &p->numel);
  if (rc == EVMPI_OK && (op->flags & EVMPI_OPF_ROOTED)) {
    rc = evmpi__pg_check_rank(op->opname, "root", pg, c->root);
    p->args.coll.root = c->root;
  }
  if (rc == EVMPI_OK && (op->flags & EVMPI_OPF_REDUCES)) {
    p->args.coll.op = c->op;
    rc = evmpi__mpi_reduce_op(op->opname, c->op, c->output->dtype, &p->args.coll.mpi_op,
                              &p->args.coll.post_divide);
    p->host_access = reduce_touches_host(c->output->dtype, p->args.coll.post_divide);
  }
  p->outputs = c->output;
  p->noutputs = 1;
  return rc;
}

int evmpi__run_elementwise(evmpi_work_t *w) {
  return evmpi__run_pieces(w, w->op->run_chunk, w->tensors[0].data, 0, w->numel);
}

int evmpi__broadcast_chunk(evmpi_work_t *w, void *data, int64_t off, int count) {
  (void)off;
  return evmpi__work_mpi_result(w, MPI_Bcast(data, count,
                                             evmpi__mpi_datatype(w->tensors[0].dtype),
                                             w->args.coll.root, w->pg->comm));
}

int evmpi__prepare_barrier(const evmpi_op_t *op, evmpi_pg_t *pg, const evmpi_op_call_t *c,
                           evmpi_op_plan_t *p) {
  (void)op, (void)pg, (void)c, (void)p;
  return EVMPI_OK;
}

/* Once every rank has reached a barrier's gate, the barrier is passed:
 * a barrier with no gate credit rides its gate (a plain one, which
 * evmpi__gate_complete always calls complete) and needs no MPI_Barrier. */
int evmpi__barrier_carry(evmpi_work_t *w, struct evmpi_gate *g, int count, bool quiet,
                         bool *carried) {
  *carried = true;
  return evmpi__gate_post(g, w->pg->internal, w->pg->rank, w->pg->size, count, quiet);
}

int evmpi__run_barrier(evmpi_work_t *w) {
  if (w->gate_carried)
    return EVMPI_OK;
  return evmpi__work_mpi_result(w, MPI_Barrier(w->pg->comm));
}
