/* ops_reduce.c: the reductions: allreduce, reduce, reduce_scatter and
 * allreduce_coalesced. Reductions are element-wise: allreduce and reduce
 * go to MPI in pieces (pieces.c), reduce_scatter's counts beyond INT_MAX
 * in chunks of EVMPI_CHUNK_ELEMS elements. */
#include "evmpi-internal.h"

#include <inttypes.h>
#include <sched.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

/* Checks op on dtype and records it on the work's template. */
typedef struct {
  MPI_Op mpi_op;
  bool post_divide;
} reduce_t;

/* Whether a reduction's run touches the data on the host: an average's
 * division, and the 16-bit float kernels (MPI_Op_create'd functions that
 * MPI calls on the buffers). A CUDA-aware MPI cannot run those on device
 * memory, so such device tensors are staged. */
static bool reduce_touches_host(evmpi_dtype_t dtype, bool post_divide) {
  return post_divide || dtype == EVMPI_FLOAT16 || dtype == EVMPI_BFLOAT16;
}

static int chunk_len(int64_t left) {
  return (int)(left < EVMPI_CHUNK_ELEMS ? left : EVMPI_CHUNK_ELEMS);
}

/* In-place allreduce of numel elements at data (a packed coalesced set),
 * piece by piece as evmpi__run_pieces cuts a tensor. */
static int allreduce_span(evmpi_work_t *w, void *data, evmpi_dtype_t dtype, int64_t numel,
                          MPI_Op op) {
  MPI_Datatype dt = evmpi__mpi_datatype(dtype);
  size_t esz = evmpi_dtype_size(dtype);
  int64_t per = evmpi__cut_elems(w->pg, w->pg->piece_bytes, esz, numel);
  char *p = data;
  for (int64_t left = numel; left > 0;) {
    int n = (int)(left < per ? left : per);
    if (left < numel)
      sched_yield();
    int rc = MPI_Allreduce(MPI_IN_PLACE, p, n, dt, op, w->pg->comm);
    if (rc != MPI_SUCCESS)
      return evmpi__work_mpi_error(w, "MPI_Allreduce", rc);
    p += (size_t)n * esz;
    left -= n;
  }
  return EVMPI_OK;
}

/* ---- allreduce ------------------------------------------------------------ */

/* One piece (pieces.c), or one chunk of a staged CUDA tensor. */
static int allreduce_chunk(evmpi_work_t *w, void *data, int64_t off, int count) {
  (void)off;
  int rc = MPI_Allreduce(MPI_IN_PLACE, data, count, evmpi__mpi_datatype(w->tensors[0].dtype),
                         w->mpi_op, w->pg->comm);
  if (rc != MPI_SUCCESS)
    return evmpi__work_mpi_error(w, "MPI_Allreduce", rc);
  evmpi__work_post_divide(w, data, count);
  return EVMPI_OK;
}

static int run_allreduce(evmpi_work_t *w) {
  return evmpi__run_pieces(w, allreduce_chunk, w->tensors[0].data, 0, w->numel);
}

int evmpi_allreduce(evmpi_pg_t *pg, evmpi_tensor_t *tensor, evmpi_reduce_op_t op,
                    evmpi_work_t **out) {
  static const char opname[] = "allreduce";
  int64_t numel = 0;
  reduce_t r;
  evmpi_work_t *w;
  int rc = evmpi__pg_check(opname, pg, out);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(opname, "tensor", tensor, &numel);
  if (rc == EVMPI_OK)
    rc = evmpi__mpi_reduce_op(opname, op, tensor->dtype, &r.mpi_op, &r.post_divide);
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, "mpi:all_reduce", opname, EVMPI_WORK_COLLECTIVE, 1, &w);
  if (rc != EVMPI_OK)
    return rc;
  w->tensors[0] = *tensor;
  w->noutputs = 1;
  w->numel = numel;
  w->op = op;
  w->mpi_op = r.mpi_op;
  w->post_divide = r.post_divide;
  evmpi__work_sign(w, tensor->dtype, numel, -1, op);
  w->run = run_allreduce;
  w->outputs_read = true;
  w->host_access = reduce_touches_host(tensor->dtype, r.post_divide);
  w->run_chunk = allreduce_chunk;
  w->piece_bytes = pg->piece_bytes;
  w->chunk_in = w->chunk_out = true;
  return evmpi__submit_collective(pg, w, out);
}

/* ---- reduce --------------------------------------------------------------- */

static int reduce_chunk(evmpi_work_t *w, void *data, int64_t off, int count) {
  (void)off;
  MPI_Datatype dt = evmpi__mpi_datatype(w->tensors[0].dtype);
  bool root = w->pg->rank == w->root;
  /* The root reduces in place; the others' buffers are only read. */
  int rc = MPI_Reduce(root ? MPI_IN_PLACE : data, root ? data : NULL, count, dt, w->mpi_op,
                      w->root, w->pg->comm);
  if (rc != MPI_SUCCESS)
    return evmpi__work_mpi_error(w, "MPI_Reduce", rc);
  if (root)
    evmpi__work_post_divide(w, data, count);
  return EVMPI_OK;
}

static int run_reduce(evmpi_work_t *w) {
  return evmpi__run_pieces(w, reduce_chunk, w->tensors[0].data, 0, w->numel);
}

int evmpi_reduce(evmpi_pg_t *pg, evmpi_tensor_t *tensor, evmpi_reduce_op_t op, int root,
                 evmpi_work_t **out) {
  static const char opname[] = "reduce";
  int64_t numel = 0;
  reduce_t r;
  evmpi_work_t *w;
  int rc = evmpi__pg_check(opname, pg, out);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(opname, "tensor", tensor, &numel);
  if (rc == EVMPI_OK)
    rc = evmpi__pg_check_rank(opname, "root", pg, root);
  if (rc == EVMPI_OK)
    rc = evmpi__mpi_reduce_op(opname, op, tensor->dtype, &r.mpi_op, &r.post_divide);
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, "mpi:reduce", opname, EVMPI_WORK_COLLECTIVE, 1, &w);
  if (rc != EVMPI_OK)
    return rc;
  w->tensors[0] = *tensor;
  w->noutputs = 1;
  w->numel = numel;
  w->root = root;
  w->op = op;
  w->mpi_op = r.mpi_op;
  w->post_divide = r.post_divide;
  evmpi__work_sign(w, tensor->dtype, numel, root, op);
  w->run = run_reduce;
  w->outputs_read = true;
  w->host_access = reduce_touches_host(tensor->dtype, r.post_divide);
  w->run_chunk = reduce_chunk;
  w->piece_bytes = pg->piece_bytes;
  w->chunk_in = true;
  w->chunk_out = pg->rank == root;
  return evmpi__submit_collective(pg, w, out);
}

/* ---- reduce_scatter -------------------------------------------------------- */

/* tensors[0] is the output, tensors[1 + r] the input for rank r. Inputs are
 * packed chunk by chunk into one buffer laid out rank after rank, which
 * MPI_Reduce_scatter_block then reduces and scatters. */
static int run_reduce_scatter(evmpi_work_t *w) {
  evmpi_tensor_t *out = &w->tensors[0];
  const evmpi_tensor_t *in = &w->tensors[1];
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
                                      w->mpi_op, w->pg->comm);
    if (rc != MPI_SUCCESS) {
      status = evmpi__work_mpi_error(w, "MPI_Reduce_scatter_block", rc);
      break;
    }
    off += n;
  }
  free(pack);
  if (status == EVMPI_OK)
    evmpi__work_post_divide(w, out->data, w->numel);
  return status;
}

int evmpi_reduce_scatter(evmpi_pg_t *pg, evmpi_tensor_t *output, const evmpi_tensor_t *inputs,
                         evmpi_reduce_op_t op, evmpi_work_t **out) {
  static const char opname[] = "reduce_scatter";
  int64_t numel = 0;
  reduce_t r;
  evmpi_work_t *w;
  int rc = evmpi__pg_check(opname, pg, out);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(opname, "output", output, &numel);
  if (rc == EVMPI_OK)
    rc = evmpi__check_group_bytes(opname, "output", numel, output->dtype, pg->size);
  if (rc == EVMPI_OK)
    rc = evmpi__check_list(opname, "inputs", inputs, pg->size, "output", output, numel);
  if (rc == EVMPI_OK)
    rc = evmpi__mpi_reduce_op(opname, op, output->dtype, &r.mpi_op, &r.post_divide);
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, "mpi:reduce_scatter", opname, EVMPI_WORK_COLLECTIVE,
                         1 + (size_t)pg->size, &w);
  if (rc != EVMPI_OK)
    return rc;
  w->tensors[0] = *output;
  memcpy(&w->tensors[1], inputs, (size_t)pg->size * sizeof *inputs);
  w->noutputs = 1;
  w->numel = numel;
  w->op = op;
  w->mpi_op = r.mpi_op;
  w->post_divide = r.post_divide;
  evmpi__work_sign(w, output->dtype, numel, -1, op);
  w->run = run_reduce_scatter;
  w->host_access = true; /* packs the inputs */
  return evmpi__submit_collective(pg, w, out);
}

/* ---- allreduce_coalesced ---------------------------------------------------- */

/* Tensors of one dtype are packed into one buffer and reduced with one
 * call, dtype by dtype in order of first appearance (the same on every
 * rank, as every rank passes the same list). A dtype with one tensor is
 * reduced in place. */
static int run_allreduce_coalesced(evmpi_work_t *w) {
  size_t n = w->count;
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
    if (evmpi__mpi_reduce_op(w->opname, w->op, dt, &op, &divide) != EVMPI_OK) {
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

int evmpi_allreduce_coalesced(evmpi_pg_t *pg, evmpi_tensor_t *tensors, size_t count,
                              evmpi_reduce_op_t op, evmpi_work_t **out) {
  static const char opname[] = "allreduce_coalesced";
  evmpi_work_t *w;
  int rc = evmpi__pg_check(opname, pg, out);
  if (rc == EVMPI_OK && !tensors)
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
      rc = evmpi__mpi_reduce_op(where, op, tensors[i].dtype, &mop, &divide);
  }
  /* Tensors of one dtype are packed into one buffer (and counted
   * together): all of them together must fit INT64_MAX bytes. */
  int64_t all_bytes = 0;
  for (size_t i = 0; rc == EVMPI_OK && i < count; i++) {
    int64_t bytes;
    if (__builtin_mul_overflow(evmpi_tensor_numel(&tensors[i]),
                               (int64_t)evmpi_dtype_size(tensors[i].dtype), &bytes) ||
        __builtin_add_overflow(all_bytes, bytes, &all_bytes))
      rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: tensors: their sizes add up to more than "
                       "INT64_MAX bytes (at tensors[%zu])", opname, i);
  }
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, "mpi:allreduce_coalesced", opname, EVMPI_WORK_COLLECTIVE, count, &w);
  if (rc != EVMPI_OK)
    return rc;
  memcpy(w->tensors, tensors, count * sizeof *tensors);
  w->noutputs = count;
  w->count = count;
  w->op = op;
  int64_t total = 0;
  for (size_t i = 0; i < count; i++)
    total += evmpi_tensor_numel(&tensors[i]);
  evmpi__work_sign(w, tensors[0].dtype, total, -1, op);
  w->run = run_allreduce_coalesced;
  w->outputs_read = true;
  w->host_access = true; /* packs per dtype */
  return evmpi__submit_collective(pg, w, out);
}
