/* ops_collective.c: broadcast and barrier. Each public function checks its
 * arguments, fills a work and queues it for the worker thread; each run_*
 * function is what the worker does with it. */
#include "evmpi-internal.h"

static int broadcast_chunk(evmpi_work_t *w, void *data, int64_t off, int count) {
  (void)off;
  int rc = MPI_Bcast(data, count, evmpi__mpi_datatype(w->tensors[0].dtype), w->root, w->pg->comm);
  return rc == MPI_SUCCESS ? EVMPI_OK : evmpi__work_mpi_error(w, "MPI_Bcast", rc);
}

static int run_broadcast(evmpi_work_t *w) {
  return evmpi__run_pieces(w, broadcast_chunk, w->tensors[0].data, 0, w->numel);
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
  evmpi__work_sign(w, tensor->dtype, numel, root, -1);
  w->run = run_broadcast;
  w->outputs_read = pg->rank == root;
  w->run_chunk = broadcast_chunk;
  w->piece_bytes = evmpi__whole_max_bytes(pg);
  w->chunk_in = pg->rank == root;
  w->chunk_out = pg->rank != root;
  return evmpi__submit_collective(pg, w, out);
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
  return evmpi__submit_collective(pg, w, out);
}
