/* ops_alltoall.c: alltoall_base (one tensor split along dim 0, equally or
 * by split sizes counted in rows) and alltoall in list form (a tensor per
 * peer, lengths free per peer). */
#include "ops-internal.h"
#include "bigcount-internal.h"
#include "mpi_ext-internal.h"
#include "pg-internal.h"
#include "status-internal.h"
#include "tensor-internal.h"
#include "work-internal.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- alltoall_base --------------------------------------------------------
 * tensors[0] is the output, tensors[1] the input; args.alltoall holds the
 * output splits then the input splits, in rows, and whether both were
 * equal (MPI_Alltoall rather than MPI_Alltoallv). */

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

int evmpi__run_alltoall_base(evmpi_work_t *w) {
  int size = w->pg->size;
  evmpi_tensor_t *out = &w->tensors[0], *in = evmpi__work_inputs(w);
  const int64_t *splits = w->args.alltoall.splits;
  MPI_Datatype row;
  int rc = row_type(row_elems(in), in->dtype, &row);
  if (rc != MPI_SUCCESS)
    return evmpi__work_mpi_error(w, "MPI_Type_contiguous", rc);
  if (w->args.alltoall.equal) {
    int n = (int)(rows_of(in) / size);
    rc = MPI_Alltoall(in->data, n, row, out->data, n, row, w->pg->comm);
    MPI_Type_free(&row);
    return evmpi__work_mpi_result(w, rc);
  }
  int *v = malloc(4 * (size_t)size * sizeof *v);
  if (!v) {
    MPI_Type_free(&row);
    return evmpi__work_fail(w, EVMPI_ERR_NOMEM, "out of memory");
  }
  int *rcounts = v, *rdispls = v + size, *scounts = v + 2 * size, *sdispls = v + 3 * size;
  int64_t ro = 0, so = 0;
  for (int r = 0; r < size; r++) {
    rcounts[r] = (int)splits[r];
    rdispls[r] = (int)ro;
    ro += splits[r];
    scounts[r] = (int)splits[size + r];
    sdispls[r] = (int)so;
    so += splits[size + r];
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

int evmpi__prepare_alltoall_base(const evmpi_op_t *op, evmpi_pg_t *pg, const evmpi_op_call_t *c,
                                 evmpi_op_plan_t *p) {
  const char *opname = op->opname;
  const evmpi_tensor_t *input = c->input, *output = c->output;
  int64_t in_numel = 0, out_numel = 0;
  int64_t *splits = NULL;
  int rc = evmpi__check_pair(opname, output, input, &out_numel, &in_numel);
  if (rc == EVMPI_OK && (input->ndim < 1 || output->ndim < 1))
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: %s has no dim 0 to split (ndim 0)", opname,
                     input->ndim < 1 ? "input" : "output");
  if (rc == EVMPI_OK && row_elems(input) != row_elems(output))
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: input rows have %" PRId64 " elements but output rows "
                     "have %" PRId64, opname, row_elems(input), row_elems(output));
  if (rc == EVMPI_OK && (rows_of(input) > INT_MAX || rows_of(output) > INT_MAX))
    rc = evmpi__fail(EVMPI_ERR_UNSUPPORTED, "%s: more than INT_MAX rows along dim 0", opname);
  bool equal = !c->output_splits && !c->input_splits;
  if (rc == EVMPI_OK && equal && in_numel != out_numel)
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: output has %" PRId64 " elements but input has %"
                     PRId64 " (an equal split needs the same size)", opname, out_numel, in_numel);
  if (rc == EVMPI_OK && !(splits = malloc(2 * (size_t)pg->size * sizeof *splits)))
    rc = evmpi__fail(EVMPI_ERR_NOMEM, "%s: out of memory", opname);
  if (rc == EVMPI_OK)
    rc = take_splits(opname, "output_splits", output, "output", c->output_splits, pg->size,
                     splits);
  if (rc == EVMPI_OK)
    rc = take_splits(opname, "input_splits", input, "input", c->input_splits, pg->size,
                     splits + pg->size);
  if (rc != EVMPI_OK) {
    free(splits);
    return rc;
  }
  p->args.alltoall.splits = splits; /* the work's from here (op_submit.c frees it on failure) */
  p->args.alltoall.equal = equal;
  /* With splits, sizes legitimately differ between ranks. */
  p->numel = equal ? in_numel : -1;
  p->outputs = output;
  p->noutputs = 1;
  p->inputs = input;
  p->ninputs = 1;
  return EVMPI_OK;
}

/* ---- alltoall (lists) --------------------------------------------------------
 * The size outputs come first, then the size inputs. Each
 * pair moves as its own message on the group's internal communicator, so
 * no packing is needed and no length is limited to INT_MAX; the worker
 * runs one collective at a time, so successive alltoalls cannot mix. */

int evmpi__run_alltoall(evmpi_work_t *w) {
  int size = w->pg->size;
  MPI_Request *reqs = malloc(2 * (size_t)size * sizeof *reqs);
  /* Real statuses: MPI_STATUSES_IGNORE given to MPI_Waitall made gcc warn
   * about the array it points at on MPICH. */
  MPI_Status *sts = malloc(2 * (size_t)size * sizeof *sts);
  evmpi_block_t *blocks = calloc(2 * (size_t)size, sizeof *blocks);
  if (!reqs || !sts || !blocks) {
    free(reqs);
    free(sts);
    free(blocks);
    return evmpi__work_fail(w, EVMPI_ERR_NOMEM, "out of memory");
  }
  /* Every receive is posted before any send: tensors[i] is the output
   * from rank i, then tensors[size + i] the input for rank i. */
  int rc = MPI_SUCCESS, posted = 0;
  const char *call = "MPI_Irecv";
  for (int i = 0; i < 2 * size && rc == MPI_SUCCESS; i++) {
    evmpi_tensor_t *t = &w->tensors[i];
    evmpi_block_t *b = &blocks[posted];
    bool send = i >= size;
    call = send ? "MPI_Isend" : "MPI_Irecv";
    rc = evmpi__block_make(evmpi_tensor_numel(t), t->dtype, b);
    if (rc == MPI_SUCCESS)
      rc = send ? MPI_Isend(t->data, b->count, b->type, i - size, 0, w->pg->internal,
                            &reqs[posted])
                : MPI_Irecv(t->data, b->count, b->type, i, 0, w->pg->internal, &reqs[posted]);
    if (rc == MPI_SUCCESS)
      posted++;
  }
  if (rc != MPI_SUCCESS) {
    for (int i = 0; i < posted; i++)
      evmpi__mpi_cancel(&reqs[i]);
  }
  evmpi__mpi_test_begin(); /* a request's error is a value on every MPI */
  int wrc = MPI_Waitall(posted, reqs, sts);
  evmpi__mpi_test_end();
  if (rc == MPI_SUCCESS && wrc != MPI_SUCCESS) {
    rc = wrc;
    call = "MPI_Waitall";
  }
  for (int i = 0; i < 2 * size; i++)
    evmpi__block_free(&blocks[i]);
  free(reqs);
  free(sts);
  free(blocks);
  return rc == MPI_SUCCESS ? EVMPI_OK : evmpi__work_mpi_error(w, call, rc);
}

int evmpi__prepare_alltoall(const evmpi_op_t *op, evmpi_pg_t *pg, const evmpi_op_call_t *c,
                            evmpi_op_plan_t *p) {
  const char *opname = op->opname;
  const evmpi_tensor_t *inputs = c->inputs;
  int rc = EVMPI_OK;
  if (!inputs)
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: inputs is NULL", opname);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(opname, "inputs[0]", &inputs[0], NULL);
  if (rc == EVMPI_OK)
    rc = evmpi__check_list(opname, "inputs", inputs, pg->size, "inputs[0]", &inputs[0], -1);
  if (rc == EVMPI_OK)
    rc = evmpi__check_list(opname, "outputs", c->outputs, pg->size, "inputs[0]", &inputs[0],
                           -1);
  p->outputs = c->outputs;
  p->noutputs = (size_t)pg->size;
  p->inputs = inputs;
  p->ninputs = (size_t)pg->size;
  return rc;
}
