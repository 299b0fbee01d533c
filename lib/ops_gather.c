/* ops_gather.c: data movement without reduction: allgather (a tensor per
 * rank, or one flat tensor), allgather_coalesced, gather and scatter.
 * Each rank's block travels as one MPI element pair from evmpi__block_make,
 * so counts beyond INT_MAX need no chunking. Per-rank tensors that lie
 * back to back in memory are used directly; others go through one
 * packing buffer. */
#include "evmpi-internal.h"

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

/* Whether a run that packs (host_access) matters: only for device tensors,
 * which then must not go to a CUDA-aware MPI as they are. */
static bool on_cuda(const evmpi_tensor_t *t) { return t->device.type == EVMPI_DEVICE_CUDA; }

static void *pack_alloc(evmpi_work_t *w, size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p)
    evmpi__work_fail(w, EVMPI_ERR_NOMEM, "cannot allocate %zu bytes for packing", bytes);
  return p;
}

/* ---- allgather ---------------------------------------------------------------
 * tensors[0..size) are the outputs, tensors[size] the input. */

static int run_allgather(evmpi_work_t *w) {
  int size = w->pg->size, rank = w->pg->rank;
  evmpi_tensor_t *outs = w->tensors, *in = &w->tensors[size];
  size_t bytes = (size_t)w->numel * evmpi_dtype_size(in->dtype);
  evmpi_block_t b;
  int rc = evmpi__block_make(w->numel, in->dtype, &b);
  if (rc != MPI_SUCCESS)
    return evmpi__work_mpi_error(w, "MPI_Type_create_struct", rc);
  int status = EVMPI_OK;
  if (adjacent(outs, size, bytes)) {
    const void *send = in->data == outs[rank].data ? MPI_IN_PLACE : in->data;
    rc = MPI_Allgather(send, b.count, b.type, outs[0].data, b.count, b.type, w->pg->comm);
    if (rc != MPI_SUCCESS)
      status = evmpi__work_mpi_error(w, "MPI_Allgather", rc);
  } else {
    char *pack = pack_alloc(w, (size_t)size * bytes);
    if (!pack) {
      status = EVMPI_ERR_NOMEM;
    } else {
      rc = MPI_Allgather(in->data, b.count, b.type, pack, b.count, b.type, w->pg->comm);
      if (rc != MPI_SUCCESS)
        status = evmpi__work_mpi_error(w, "MPI_Allgather", rc);
      else
        for (int r = 0; r < size; r++)
          memcpy(outs[r].data, pack + (size_t)r * bytes, bytes);
      free(pack);
    }
  }
  evmpi__block_free(&b);
  return status;
}

int evmpi_allgather(evmpi_pg_t *pg, evmpi_tensor_t *outputs, const evmpi_tensor_t *input,
                    evmpi_work_t **out) {
  static const char opname[] = "allgather";
  int64_t numel = 0;
  evmpi_work_t *w;
  int rc = evmpi__pg_check(opname, pg, out);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(opname, "input", input, &numel);
  if (rc == EVMPI_OK)
    rc = evmpi__check_group_bytes(opname, "input", numel, input->dtype, pg->size);
  if (rc == EVMPI_OK)
    rc = evmpi__check_list(opname, "outputs", outputs, pg->size, "input", input, numel);
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, "mpi:all_gather", opname, EVMPI_WORK_COLLECTIVE,
                         (size_t)pg->size + 1, &w);
  if (rc != EVMPI_OK)
    return rc;
  memcpy(w->tensors, outputs, (size_t)pg->size * sizeof *outputs);
  w->tensors[pg->size] = *input;
  w->noutputs = (size_t)pg->size;
  w->numel = numel;
  evmpi__work_sign(w, input->dtype, numel, -1, -1);
  w->run = run_allgather;
  /* Only a device tensor's path asks; host tensors skip the scan. */
  w->host_access = on_cuda(input) &&
                   !adjacent(outputs, pg->size, (size_t)numel * evmpi_dtype_size(input->dtype));
  return evmpi__submit_collective(pg, w, out);
}

/* ---- allgather_base: one flat output ------------------------------------------ */

static int run_allgather_base(evmpi_work_t *w) {
  evmpi_tensor_t *out = &w->tensors[0], *in = &w->tensors[1];
  size_t bytes = (size_t)w->numel * evmpi_dtype_size(in->dtype);
  evmpi_block_t b;
  int rc = evmpi__block_make(w->numel, in->dtype, &b);
  if (rc == MPI_SUCCESS) {
    bool in_place = (char *)in->data == (char *)out->data + (size_t)w->pg->rank * bytes;
    rc = MPI_Allgather(in_place ? MPI_IN_PLACE : in->data, b.count, b.type, out->data, b.count,
                       b.type, w->pg->comm);
  }
  evmpi__block_free(&b);
  return rc == MPI_SUCCESS ? EVMPI_OK : evmpi__work_mpi_error(w, "MPI_Allgather", rc);
}

int evmpi_allgather_base(evmpi_pg_t *pg, evmpi_tensor_t *output, const evmpi_tensor_t *input,
                         evmpi_work_t **out) {
  static const char opname[] = "allgather_base";
  int64_t numel = 0, onumel = 0;
  evmpi_work_t *w;
  int rc = evmpi__pg_check(opname, pg, out);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(opname, "input", input, &numel);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(opname, "output", output, &onumel);
  if (rc == EVMPI_OK && output->dtype != input->dtype)
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: output is %s but input is %s", opname,
                     evmpi__dtype_name(output->dtype), evmpi__dtype_name(input->dtype));
  if (rc == EVMPI_OK)
    rc = evmpi__check_same_device(opname, "output", output, "input", input);
  /* numel * size cannot overflow past this: it would have wrapped to a
   * small count that a small output matched. */
  if (rc == EVMPI_OK)
    rc = evmpi__check_group_bytes(opname, "input", numel, input->dtype, pg->size);
  if (rc == EVMPI_OK && onumel != numel * pg->size)
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: output has %lld elements, must be the group size "
                     "(%d) times the input's %lld", opname, (long long)onumel, pg->size,
                     (long long)numel);
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, "mpi:_allgather_base", opname, EVMPI_WORK_COLLECTIVE, 2, &w);
  if (rc != EVMPI_OK)
    return rc;
  w->tensors[0] = *output;
  w->tensors[1] = *input;
  w->noutputs = 1;
  w->numel = numel;
  evmpi__work_sign(w, input->dtype, numel, -1, -1);
  w->run = run_allgather_base;
  return evmpi__submit_collective(pg, w, out);
}

/* ---- allgather_coalesced -------------------------------------------------------
 * tensors[0 .. count*size) are the outputs (group i for inputs[i]), then
 * the count inputs. Inputs are packed as bytes into one block, gathered
 * with one MPI_Allgather, and unpacked. */

static int run_allgather_coalesced(evmpi_work_t *w) {
  int size = w->pg->size;
  size_t count = w->count;
  evmpi_tensor_t *outs = w->tensors, *ins = &w->tensors[count * (size_t)size];
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
  if (rc == MPI_SUCCESS) {
    for (int r = 0; r < size; r++) {
      at = (size_t)r * block;
      for (size_t i = 0; i < count; i++) {
        size_t bytes = (size_t)evmpi_tensor_numel(&ins[i]) * evmpi_dtype_size(ins[i].dtype);
        memcpy(outs[i * (size_t)size + (size_t)r].data, recv + at, bytes);
        at += bytes;
      }
    }
  }
  free(send);
  free(recv);
  return rc == MPI_SUCCESS ? EVMPI_OK : evmpi__work_mpi_error(w, "MPI_Allgather", rc);
}

int evmpi_allgather_coalesced(evmpi_pg_t *pg, evmpi_tensor_t *outputs,
                              const evmpi_tensor_t *inputs, size_t count, evmpi_work_t **out) {
  static const char opname[] = "allgather_coalesced";
  evmpi_work_t *w;
  int rc = evmpi__pg_check(opname, pg, out);
  if (rc == EVMPI_OK && (!inputs || !outputs))
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
      rc = evmpi__check_list(opname, group, &outputs[i * (size_t)pg->size], pg->size, name,
                             &inputs[i], numel);
  }
  /* The inputs are packed into one block per rank, gathered from every
   * rank: their bytes, and those times the group size, must fit. */
  int64_t block = 0;
  for (size_t i = 0; rc == EVMPI_OK && i < count; i++) {
    int64_t bytes;
    if (__builtin_mul_overflow(evmpi_tensor_numel(&inputs[i]),
                               (int64_t)evmpi_dtype_size(inputs[i].dtype), &bytes) ||
        __builtin_add_overflow(block, bytes, &block))
      rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: inputs: the inputs' sizes add up to more than "
                       "INT64_MAX bytes (at inputs[%zu])", opname, i);
  }
  if (rc == EVMPI_OK)
    rc = evmpi__check_group_bytes(opname, "inputs (packed)", block, EVMPI_UINT8, pg->size);
  size_t nout = count * (size_t)pg->size;
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, "mpi:allgather_coalesced", opname, EVMPI_WORK_COLLECTIVE,
                         nout + count, &w);
  if (rc != EVMPI_OK)
    return rc;
  memcpy(w->tensors, outputs, nout * sizeof *outputs);
  memcpy(&w->tensors[nout], inputs, count * sizeof *inputs);
  w->noutputs = nout;
  w->count = count;
  int64_t total = 0;
  for (size_t i = 0; i < count; i++)
    total += evmpi_tensor_numel(&inputs[i]);
  evmpi__work_sign(w, inputs[0].dtype, total, -1, -1);
  w->run = run_allgather_coalesced;
  w->host_access = true; /* packs inputs and outputs */
  return evmpi__submit_collective(pg, w, out);
}

/* ---- gather ------------------------------------------------------------------
 * On the root tensors[0..size) are the outputs; the input comes last. */

static int run_gather(evmpi_work_t *w) {
  int size = w->pg->size;
  bool root = w->pg->rank == w->root;
  evmpi_tensor_t *outs = w->tensors, *in = &w->tensors[w->noutputs];
  size_t bytes = (size_t)w->numel * evmpi_dtype_size(in->dtype);
  evmpi_block_t b;
  int rc = evmpi__block_make(w->numel, in->dtype, &b);
  if (rc != MPI_SUCCESS)
    return evmpi__work_mpi_error(w, "MPI_Type_create_struct", rc);
  int status = EVMPI_OK;
  if (!root) {
    rc = MPI_Gather(in->data, b.count, b.type, NULL, 0, b.type, w->root, w->pg->comm);
  } else if (adjacent(outs, size, bytes)) {
    const void *send = in->data == outs[w->root].data ? MPI_IN_PLACE : in->data;
    rc = MPI_Gather(send, b.count, b.type, outs[0].data, b.count, b.type, w->root, w->pg->comm);
  } else {
    char *pack = pack_alloc(w, (size_t)size * bytes);
    if (!pack) {
      status = EVMPI_ERR_NOMEM;
    } else {
      rc = MPI_Gather(in->data, b.count, b.type, pack, b.count, b.type, w->root, w->pg->comm);
      if (rc == MPI_SUCCESS)
        for (int r = 0; r < size; r++)
          memcpy(outs[r].data, pack + (size_t)r * bytes, bytes);
      free(pack);
    }
  }
  evmpi__block_free(&b);
  if (status == EVMPI_OK && rc != MPI_SUCCESS)
    status = evmpi__work_mpi_error(w, "MPI_Gather", rc);
  return status;
}

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

int evmpi_gather(evmpi_pg_t *pg, evmpi_tensor_t *outputs, const evmpi_tensor_t *input, int root,
                 evmpi_work_t **out) {
  static const char opname[] = "gather";
  int64_t numel = 0;
  evmpi_work_t *w;
  int rc = evmpi__pg_check(opname, pg, out);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(opname, "input", input, &numel);
  if (rc == EVMPI_OK)
    rc = evmpi__check_group_bytes(opname, "input", numel, input->dtype, pg->size);
  if (rc == EVMPI_OK)
    rc = evmpi__pg_check_rank(opname, "root", pg, root);
  if (rc == EVMPI_OK)
    rc = check_root_list(opname, "outputs", pg, root, outputs);
  bool is_root = rc == EVMPI_OK && pg->rank == root;
  if (is_root)
    rc = evmpi__check_list(opname, "outputs", outputs, pg->size, "input", input, numel);
  size_t nout = is_root ? (size_t)pg->size : 0;
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, "mpi:gather", opname, EVMPI_WORK_COLLECTIVE, 1 + nout, &w);
  if (rc != EVMPI_OK)
    return rc;
  if (nout)
    memcpy(w->tensors, outputs, nout * sizeof *outputs);
  w->tensors[nout] = *input;
  w->noutputs = nout;
  w->numel = numel;
  w->root = root;
  evmpi__work_sign(w, input->dtype, numel, root, -1);
  w->run = run_gather;
  w->host_access = nout && on_cuda(input) &&
                   !adjacent(outputs, pg->size, (size_t)numel * evmpi_dtype_size(input->dtype));
  return evmpi__submit_collective(pg, w, out);
}

/* ---- scatter ------------------------------------------------------------------
 * tensors[0] is the output; on the root tensors[1 + r] are the inputs. */

static int run_scatter(evmpi_work_t *w) {
  int size = w->pg->size;
  bool root = w->pg->rank == w->root;
  evmpi_tensor_t *outp = &w->tensors[0], *ins = &w->tensors[1];
  size_t bytes = (size_t)w->numel * evmpi_dtype_size(outp->dtype);
  evmpi_block_t b;
  int rc = evmpi__block_make(w->numel, outp->dtype, &b);
  if (rc != MPI_SUCCESS)
    return evmpi__work_mpi_error(w, "MPI_Type_create_struct", rc);
  int status = EVMPI_OK;
  if (!root) {
    rc = MPI_Scatter(NULL, 0, b.type, outp->data, b.count, b.type, w->root, w->pg->comm);
  } else {
    void *recv = outp->data == ins[w->root].data ? MPI_IN_PLACE : outp->data;
    char *pack = NULL;
    const void *send = ins[0].data;
    if (!adjacent(ins, size, bytes)) {
      pack = pack_alloc(w, (size_t)size * bytes);
      if (!pack)
        status = EVMPI_ERR_NOMEM;
      else
        for (int r = 0; r < size; r++)
          memcpy(pack + (size_t)r * bytes, ins[r].data, bytes);
      send = pack;
    }
    if (status == EVMPI_OK)
      rc = MPI_Scatter(send, b.count, b.type, recv, b.count, b.type, w->root, w->pg->comm);
    free(pack);
  }
  evmpi__block_free(&b);
  if (status == EVMPI_OK && rc != MPI_SUCCESS)
    status = evmpi__work_mpi_error(w, "MPI_Scatter", rc);
  return status;
}

int evmpi_scatter(evmpi_pg_t *pg, evmpi_tensor_t *output, const evmpi_tensor_t *inputs, int root,
                  evmpi_work_t **out) {
  static const char opname[] = "scatter";
  int64_t numel = 0;
  evmpi_work_t *w;
  int rc = evmpi__pg_check(opname, pg, out);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(opname, "output", output, &numel);
  if (rc == EVMPI_OK)
    rc = evmpi__check_group_bytes(opname, "output", numel, output->dtype, pg->size);
  if (rc == EVMPI_OK)
    rc = evmpi__pg_check_rank(opname, "root", pg, root);
  if (rc == EVMPI_OK)
    rc = check_root_list(opname, "inputs", pg, root, inputs);
  bool is_root = rc == EVMPI_OK && pg->rank == root;
  if (is_root)
    rc = evmpi__check_list(opname, "inputs", inputs, pg->size, "output", output, numel);
  size_t nin = is_root ? (size_t)pg->size : 0;
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, "mpi:scatter", opname, EVMPI_WORK_COLLECTIVE, 1 + nin, &w);
  if (rc != EVMPI_OK)
    return rc;
  w->tensors[0] = *output;
  if (nin)
    memcpy(&w->tensors[1], inputs, nin * sizeof *inputs);
  w->noutputs = 1;
  w->numel = numel;
  w->root = root;
  evmpi__work_sign(w, output->dtype, numel, root, -1);
  w->run = run_scatter;
  w->host_access = nin && on_cuda(output) &&
                   !adjacent(inputs, pg->size, (size_t)numel * evmpi_dtype_size(output->dtype));
  return evmpi__submit_collective(pg, w, out);
}
