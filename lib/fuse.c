/* fuse.c: a burst of small allreduces that every rank holds, run as one.
 * A queued 1 KiB allreduce cost MPI most of a microsecond whatever its
 * size, and ten thousand of them queued at once reached about half of raw
 * MPI's rate; packed into one buffer, a set of them is one
 * MPI_Allreduce, which moves many small tensors for little more than the
 * price of one (Horovod's tensor fusion, PyTorch DDP's buckets).
 *
 * Every rank must make the same calls, so the worker fuses only what the
 * last arrival gate said every rank holds (its credit, worker.c), and the
 * set is chosen from the calls alone: the operation, the dtype, the op
 * and the sizes, which a correct program gives alike on every rank, and
 * the group's EVMPI_COLL_FUSE_BYTES, the same on every rank. Where a
 * tensor lives is this rank's own business: a device tensor is copied
 * into the pack and back (cudaMemcpy), so it never changes the set.
 *
 * The result is the allreduce of each element, as MPI computes it for the
 * packed length: MPI may pick another algorithm for a longer buffer, so a
 * float sum can differ in its last bits from the same allreduce run
 * alone; it is the same on every rank. */
#include "fuse-internal.h"
#include "cuda-internal.h"
#include "dtype_mpi-internal.h"
#include "pg-internal.h"
#include "status-internal.h"
#include "work-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t work_bytes(const evmpi_work_t *w) {
  return w->numel * (int64_t)evmpi_dtype_size(w->tensors[0].dtype);
}

bool evmpi__fuse_can_lead(const evmpi_work_t *w, int64_t limit) {
  return w->op->id == EVMPI_OP_ALLREDUCE && !w->gate_carried && w->numel >= 0 &&
         work_bytes(w) < limit;
}

bool evmpi__fuse_lead(evmpi_fuse_t *f, evmpi_work_t *w, int64_t limit) {
  f->n = 0;
  f->bytes = 0;
  if (!evmpi__fuse_can_lead(w, limit))
    return false;
  f->works[0] = w;
  f->status[0] = EVMPI_OK;
  f->n = 1;
  f->bytes = work_bytes(w);
  return true;
}

bool evmpi__fuse_add(evmpi_fuse_t *f, evmpi_work_t *w, int64_t limit) {
  const evmpi_work_t *lead = f->works[0];
  if (f->n == 0 || f->n == EVMPI_FUSE_MAX_WORKS || w->op != lead->op || w->numel < 0 ||
      w->tensors[0].dtype != lead->tensors[0].dtype || w->args.coll.op != lead->args.coll.op ||
      f->bytes + work_bytes(w) > limit)
    return false;
  f->status[f->n] = EVMPI_OK;
  f->works[f->n++] = w;
  f->bytes += work_bytes(w);
  return true;
}

/* Copies one work's tensor into (in) or out of the pack at at. A device
 * tensor is copied with its device current; a failure fails the work. */
static int copy_tensor(evmpi_work_t *w, char *at, bool in) {
  size_t bytes = (size_t)work_bytes(w);
  if (bytes == 0)
    return EVMPI_OK;
  void *data = w->tensors[0].data;
  if (w->device.type == EVMPI_DEVICE_CPU) {
    if (in)
      memcpy(at, data, bytes);
    else
      memcpy(data, at, bytes);
    return EVMPI_OK;
  }
#ifdef EVMPI_HAVE_CUDA
  char why[256];
  if (evmpi__cuda_copy(in ? at : data, in ? data : at, bytes, w->device.index, !in, why,
                       sizeof why))
    return EVMPI_OK;
  return evmpi__work_fail(w, EVMPI_ERR_CUDA, "%s (#%llu, fused): %s", in ? "packing" : "unpacking",
                          (unsigned long long)w->seq, why);
#else
  /* evmpi__work_place refuses device tensors without CUDA. */
  return evmpi__work_fail(w, EVMPI_ERR_UNSUPPORTED, "a device tensor without CUDA");
#endif
}

void evmpi__fuse_reduce(evmpi_fuse_t *f) {
  evmpi_work_t *lead = f->works[0];
  evmpi_pg_t *pg = lead->pg;
  size_t need = (size_t)f->bytes ? (size_t)f->bytes : 1;
  if (need > f->cap) {
    void *p = realloc(f->pack, need);
    if (!p) {
      /* Every rank is about to make the call: a rank out of memory must
       * not leave the others in it, so nothing can be saved here. */
      for (size_t i = 0; i < f->n; i++)
        f->status[i] = evmpi__work_fail(f->works[i], EVMPI_ERR_NOMEM, "cannot allocate %zu "
                                        "bytes to fuse %zu allreduces", need, f->n);
      return;
    }
    f->pack = p;
    f->cap = need;
  }
  char *at = f->pack;
  for (size_t i = 0; i < f->n; i++) {
    f->status[i] = copy_tensor(f->works[i], at, true);
    at += work_bytes(f->works[i]);
  }
  evmpi_dtype_t dtype = lead->tensors[0].dtype;
  int64_t elems = f->bytes / (int64_t)evmpi_dtype_size(dtype); /* at most the setting's 16 MiB */
  int rc = MPI_Allreduce(MPI_IN_PLACE, f->pack, (int)elems, evmpi__mpi_datatype(dtype),
                         lead->args.coll.mpi_op, pg->comm);
  if (rc != MPI_SUCCESS) {
    char call[64];
    snprintf(call, sizeof call, "MPI_Allreduce (%zu allreduces fused)", f->n);
    for (size_t i = 0; i < f->n; i++)
      f->status[i] = evmpi__work_mpi_error(f->works[i], call, rc);
    return;
  }
  if (lead->args.coll.post_divide)
    evmpi__divide(f->pack, dtype, elems, pg->size);
}

void evmpi__fuse_unpack(evmpi_fuse_t *f) {
  char *at = f->pack;
  for (size_t i = 0; i < f->n; i++) {
    if (f->status[i] == EVMPI_OK)
      f->status[i] = copy_tensor(f->works[i], at, false);
    at += work_bytes(f->works[i]);
  }
}

void evmpi__fuse_fini(evmpi_fuse_t *f) {
  free(f->pack);
  f->pack = NULL;
  f->cap = 0;
  f->n = 0;
}
