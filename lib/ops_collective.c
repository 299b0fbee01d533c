/* ops_collective.c: the collectives. Each public function checks its
 * arguments, fills a work and queues it for the worker thread; each run_*
 * function is what the worker does with it. */
#include "evmpi-internal.h"

#include <limits.h>

/* MPI counts are ints: larger element counts go in chunks of this many.
 * Element-wise operations (reductions, broadcast) split cleanly. */
#define EVMPI_CHUNK_ELEMS ((int64_t)INT_MAX)

static int queue(evmpi_pg_t *pg, evmpi_work_t *w, evmpi_work_t **out) {
  int rc = evmpi__worker_submit(&pg->worker, w);
  if (rc != EVMPI_OK) {
    evmpi__work_discard(w);
    return rc;
  }
  *out = w;
  return EVMPI_OK;
}

static int run_allreduce(evmpi_work_t *w) {
  evmpi_tensor_t *t = &w->tensors[0];
  MPI_Datatype dt = evmpi__mpi_datatype(t->dtype);
  size_t esz = evmpi_dtype_size(t->dtype);
  char *p = t->data;
  for (int64_t left = w->numel; left > 0;) {
    int n = (int)(left < EVMPI_CHUNK_ELEMS ? left : EVMPI_CHUNK_ELEMS);
    int rc = MPI_Allreduce(MPI_IN_PLACE, p, n, dt, w->mpi_op, w->pg->comm);
    if (rc != MPI_SUCCESS)
      return evmpi__work_mpi_error(w, "MPI_Allreduce", rc);
    p += (size_t)n * esz;
    left -= n;
  }
  if (w->post_divide)
    evmpi__divide(t->data, t->dtype, w->numel, w->pg->size);
  return EVMPI_OK;
}

int evmpi_allreduce(evmpi_pg_t *pg, evmpi_tensor_t *tensor, evmpi_reduce_op_t op,
                    evmpi_work_t **out) {
  static const char opname[] = "allreduce";
  int64_t numel = 0;
  MPI_Op mpi_op;
  bool post_divide;
  evmpi_work_t *w;
  int rc = evmpi__pg_check(opname, pg, out);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(opname, "tensor", tensor, &numel);
  if (rc == EVMPI_OK)
    rc = evmpi__mpi_reduce_op(opname, op, tensor->dtype, &mpi_op, &post_divide);
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, "mpi:all_reduce", opname, EVMPI_WORK_COLLECTIVE, 1, &w);
  if (rc != EVMPI_OK)
    return rc;
  w->tensors[0] = *tensor;
  w->noutputs = 1;
  w->numel = numel;
  w->op = op;
  w->mpi_op = mpi_op;
  w->post_divide = post_divide;
  w->run = run_allreduce;
  return queue(pg, w, out);
}

static int run_broadcast(evmpi_work_t *w) {
  evmpi_tensor_t *t = &w->tensors[0];
  MPI_Datatype dt = evmpi__mpi_datatype(t->dtype);
  size_t esz = evmpi_dtype_size(t->dtype);
  char *p = t->data;
  for (int64_t left = w->numel; left > 0;) {
    int n = (int)(left < EVMPI_CHUNK_ELEMS ? left : EVMPI_CHUNK_ELEMS);
    int rc = MPI_Bcast(p, n, dt, w->root, w->pg->comm);
    if (rc != MPI_SUCCESS)
      return evmpi__work_mpi_error(w, "MPI_Bcast", rc);
    p += (size_t)n * esz;
    left -= n;
  }
  return EVMPI_OK;
}

int evmpi_broadcast(evmpi_pg_t *pg, evmpi_tensor_t *tensor, int root, evmpi_work_t **out) {
  static const char opname[] = "broadcast";
  int64_t numel = 0;
  evmpi_work_t *w;
  int rc = evmpi__pg_check(opname, pg, out);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(opname, "tensor", tensor, &numel);
  if (rc == EVMPI_OK)
    rc = evmpi__pg_check_rank(opname, "root", pg, root);
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, "mpi:broadcast", opname, EVMPI_WORK_COLLECTIVE, 1, &w);
  if (rc != EVMPI_OK)
    return rc;
  w->tensors[0] = *tensor;
  w->noutputs = 1;
  w->numel = numel;
  w->root = root;
  w->run = run_broadcast;
  return queue(pg, w, out);
}

static int run_barrier(evmpi_work_t *w) {
  int rc = MPI_Barrier(w->pg->comm);
  return rc == MPI_SUCCESS ? EVMPI_OK : evmpi__work_mpi_error(w, "MPI_Barrier", rc);
}

int evmpi_barrier(evmpi_pg_t *pg, evmpi_work_t **out) {
  static const char opname[] = "barrier";
  evmpi_work_t *w;
  int rc = evmpi__pg_check(opname, pg, out);
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, "mpi:barrier", opname, EVMPI_WORK_COLLECTIVE, 0, &w);
  if (rc != EVMPI_OK)
    return rc;
  w->run = run_barrier;
  return queue(pg, w, out);
}
