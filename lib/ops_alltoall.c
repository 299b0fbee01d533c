/* ops_alltoall.c: alltoall_base (one tensor split along dim 0, equally or
 * by split sizes counted in rows) and alltoall in list form (a tensor per
 * peer, lengths free per peer). */
#include "evmpi-internal.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- alltoall_base --------------------------------------------------------
 * tensors[0] is the output, tensors[1] the input; w->splits holds the
 * output splits then the input splits, in rows; w->count is 1 when both
 * were equal (MPI_Alltoall), 0 otherwise (MPI_Alltoallv). */

static int64_t rows_of(const evmpi_tensor_t *t) { return t->shape[0]; }

/* Bounded: evmpi__check_tensor checks that the non-zero extents multiply
 * to a byte count, also when dim 0 is 0. */
static int64_t row_elems(const evmpi_tensor_t *t) {
  int64_t n = 1;
  for (int i = 1; i < t->ndim; i++)
    n *= t->shape[i];
  return n;
}

/* A datatype for one row of row elements of dtype. */
static int row_type(int64_t row, evmpi_dtype_t dtype, MPI_Datatype *type) {
  evmpi_block_t b;
  int rc = evmpi__block_make(row, dtype, &b);
  if (rc != MPI_SUCCESS)
    return rc;
  if (b.owned) {
    *type = b.type;
    return MPI_SUCCESS;
  }
  rc = MPI_Type_contiguous(b.count, b.type, type);
  if (rc == MPI_SUCCESS)
    rc = MPI_Type_commit(type);
  return rc;
}

static int run_alltoall_base(evmpi_work_t *w) {
  int size = w->pg->size;
  evmpi_tensor_t *out = &w->tensors[0], *in = &w->tensors[1];
  MPI_Datatype row;
  int rc = row_type(row_elems(in), in->dtype, &row);
  if (rc != MPI_SUCCESS)
    return evmpi__work_mpi_error(w, "MPI_Type_contiguous", rc);
  if (w->count == 1) {
    int n = (int)(rows_of(in) / size);
    rc = MPI_Alltoall(in->data, n, row, out->data, n, row, w->pg->comm);
    MPI_Type_free(&row);
    return rc == MPI_SUCCESS ? EVMPI_OK : evmpi__work_mpi_error(w, "MPI_Alltoall", rc);
  }
  int *v = malloc(4 * (size_t)size * sizeof *v);
  if (!v) {
    MPI_Type_free(&row);
    return evmpi__work_fail(w, EVMPI_ERR_NOMEM, "out of memory");
  }
  int *rcounts = v, *rdispls = v + size, *scounts = v + 2 * size, *sdispls = v + 3 * size;
  int64_t ro = 0, so = 0;
  for (int r = 0; r < size; r++) {
    rcounts[r] = (int)w->splits[r];
    rdispls[r] = (int)ro;
    ro += w->splits[r];
    scounts[r] = (int)w->splits[size + r];
    sdispls[r] = (int)so;
    so += w->splits[size + r];
  }
  rc = MPI_Alltoallv(in->data, scounts, sdispls, row, out->data, rcounts, rdispls, row,
                     w->pg->comm);
  free(v);
  MPI_Type_free(&row);
  return rc == MPI_SUCCESS ? EVMPI_OK : evmpi__work_mpi_error(w, "MPI_Alltoallv", rc);
}

/* Fills splits[0..size) from given (or an equal split of t's rows). */
static int take_splits(const char *op, const char *arg, const evmpi_tensor_t *t,
                       const char *tname, const int64_t *given, int size, int64_t *splits) {
  int64_t rows = rows_of(t);
  if (!given) {
    if (rows % size != 0)
      return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s's dim 0 (%" PRId64 ") does not divide "
                         "equally across the group size (%d)", op, tname, rows, size);
    for (int r = 0; r < size; r++)
      splits[r] = rows / size;
    return EVMPI_OK;
  }
  int64_t sum = 0;
  for (int r = 0; r < size; r++) {
    if (given[r] < 0)
      return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s[%d] is %" PRId64 ", must be >= 0", op, arg, r,
                         given[r]);
    if (__builtin_add_overflow(sum, given[r], &sum)) {
      sum = INT64_MAX; /* more than any dim 0: "at least" that */
      break;
    }
    if (sum > rows)
      break;
    splits[r] = given[r];
  }
  if (sum != rows)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s sum to %s%" PRId64 " rows but %s has %" PRId64
                       " along dim 0", op, arg, sum > rows ? "at least " : "", sum, tname, rows);
  return EVMPI_OK;
}

int evmpi_alltoall_base(evmpi_pg_t *pg, evmpi_tensor_t *output, const evmpi_tensor_t *input,
                        const int64_t *output_splits, const int64_t *input_splits,
                        evmpi_work_t **out) {
  static const char opname[] = "alltoall_base";
  int64_t in_numel = 0, out_numel = 0;
  int64_t *splits = NULL;
  evmpi_work_t *w;
  int rc = evmpi__pg_check(opname, pg, out);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(opname, "input", input, &in_numel);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(opname, "output", output, &out_numel);
  if (rc == EVMPI_OK && (input->ndim < 1 || output->ndim < 1))
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: %s has no dim 0 to split (ndim 0)", opname,
                     input->ndim < 1 ? "input" : "output");
  if (rc == EVMPI_OK && input->dtype != output->dtype)
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: output is %s but input is %s", opname,
                     evmpi__dtype_name(output->dtype), evmpi__dtype_name(input->dtype));
  if (rc == EVMPI_OK)
    rc = evmpi__check_same_device(opname, "output", output, "input", input);
  if (rc == EVMPI_OK && row_elems(input) != row_elems(output))
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: input rows have %" PRId64 " elements but output rows "
                     "have %" PRId64, opname, row_elems(input), row_elems(output));
  if (rc == EVMPI_OK && (rows_of(input) > INT_MAX || rows_of(output) > INT_MAX))
    rc = evmpi__fail(EVMPI_ERR_UNSUPPORTED, "%s: more than INT_MAX rows along dim 0", opname);
  if (rc == EVMPI_OK && !output_splits && !input_splits && in_numel != out_numel)
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: output has %" PRId64 " elements but input has %"
                     PRId64 " (an equal split needs the same size)", opname, out_numel, in_numel);
  if (rc == EVMPI_OK && !(splits = malloc(2 * (size_t)pg->size * sizeof *splits)))
    rc = evmpi__fail(EVMPI_ERR_NOMEM, "%s: out of memory", opname);
  if (rc == EVMPI_OK)
    rc = take_splits(opname, "output_splits", output, "output", output_splits, pg->size, splits);
  if (rc == EVMPI_OK)
    rc = take_splits(opname, "input_splits", input, "input", input_splits, pg->size,
                     splits + pg->size);
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, "mpi:all_to_all", opname, EVMPI_WORK_COLLECTIVE, 2, &w);
  if (rc != EVMPI_OK) {
    free(splits);
    return rc;
  }
  w->tensors[0] = *output;
  w->tensors[1] = *input;
  w->noutputs = 1;
  w->numel = in_numel;
  w->splits = splits;
  w->count = !output_splits && !input_splits;
  /* With splits, sizes legitimately differ between ranks. */
  evmpi__work_sign(w, input->dtype, w->count ? in_numel : -1, -1, -1);
  w->run = run_alltoall_base;
  return evmpi__submit_collective(pg, w, out);
}

/* ---- alltoall (lists) --------------------------------------------------------
 * tensors[0..size) are the outputs, tensors[size..2*size) the inputs. Each
 * pair moves as its own message on the group's internal communicator, so
 * no packing is needed and no length is limited to INT_MAX; the worker
 * runs one collective at a time, so successive alltoalls cannot mix. */

static int run_alltoall(evmpi_work_t *w) {
  int size = w->pg->size;
  evmpi_tensor_t *outs = w->tensors, *ins = &w->tensors[size];
  MPI_Request *reqs = malloc(2 * (size_t)size * sizeof *reqs);
  evmpi_block_t *blocks = calloc(2 * (size_t)size, sizeof *blocks);
  if (!reqs || !blocks) {
    free(reqs);
    free(blocks);
    return evmpi__work_fail(w, EVMPI_ERR_NOMEM, "out of memory");
  }
  int rc = MPI_SUCCESS, posted = 0;
  const char *call = "MPI_Irecv";
  for (int r = 0; r < size && rc == MPI_SUCCESS; r++) {
    rc = evmpi__block_make(evmpi_tensor_numel(&outs[r]), outs[r].dtype, &blocks[posted]);
    if (rc == MPI_SUCCESS)
      rc = MPI_Irecv(outs[r].data, blocks[posted].count, blocks[posted].type, r, 0,
                     w->pg->internal, &reqs[posted]);
    if (rc == MPI_SUCCESS)
      posted++;
  }
  for (int r = 0; r < size && rc == MPI_SUCCESS; r++) {
    call = "MPI_Isend";
    rc = evmpi__block_make(evmpi_tensor_numel(&ins[r]), ins[r].dtype, &blocks[posted]);
    if (rc == MPI_SUCCESS)
      rc = MPI_Isend(ins[r].data, blocks[posted].count, blocks[posted].type, r, 0,
                     w->pg->internal, &reqs[posted]);
    if (rc == MPI_SUCCESS)
      posted++;
  }
  if (rc != MPI_SUCCESS) {
    for (int i = 0; i < posted; i++)
      MPI_Cancel(&reqs[i]);
  }
  evmpi__mpi_test_begin(); /* a request's error is a value on every MPI */
  int wrc = MPI_Waitall(posted, reqs, MPI_STATUSES_IGNORE);
  evmpi__mpi_test_end();
  if (rc == MPI_SUCCESS && wrc != MPI_SUCCESS) {
    rc = wrc;
    call = "MPI_Waitall";
  }
  for (int i = 0; i < 2 * size; i++)
    evmpi__block_free(&blocks[i]);
  free(reqs);
  free(blocks);
  return rc == MPI_SUCCESS ? EVMPI_OK : evmpi__work_mpi_error(w, call, rc);
}

int evmpi_alltoall(evmpi_pg_t *pg, evmpi_tensor_t *outputs, const evmpi_tensor_t *inputs,
                   evmpi_work_t **out) {
  static const char opname[] = "alltoall";
  evmpi_work_t *w;
  int rc = evmpi__pg_check(opname, pg, out);
  if (rc == EVMPI_OK && !inputs)
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: inputs is NULL", opname);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(opname, "inputs[0]", &inputs[0], NULL);
  if (rc == EVMPI_OK)
    rc = evmpi__check_list(opname, "inputs", inputs, pg->size, "inputs[0]", &inputs[0], -1);
  if (rc == EVMPI_OK)
    rc = evmpi__check_list(opname, "outputs", outputs, pg->size, "inputs[0]", &inputs[0],
                           -1);
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, "mpi:all_to_all", opname, EVMPI_WORK_COLLECTIVE,
                         2 * (size_t)pg->size, &w);
  if (rc != EVMPI_OK)
    return rc;
  memcpy(w->tensors, outputs, (size_t)pg->size * sizeof *outputs);
  memcpy(&w->tensors[pg->size], inputs, (size_t)pg->size * sizeof *inputs);
  w->noutputs = (size_t)pg->size;
  evmpi__work_sign(w, inputs[0].dtype, -1, -1, -1);
  w->run = run_alltoall;
  return evmpi__submit_collective(pg, w, out);
}
