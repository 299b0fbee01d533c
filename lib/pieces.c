/* pieces.c: large allreduces, reduces and broadcasts go to MPI in pieces.
 *
 * Open MPI's blocking MPI_Allreduce gets slower per byte above a few MiB
 * on shared memory (its temporaries no longer stay in cache and are
 * faulted in afresh on every call), so a large allreduce is faster as many
 * 1 MiB ones over the same bytes. Pieces also give the worker a point,
 * every piece, where it yields its core: the loop thread shares it, and a
 * blocking collective otherwise holds the core for the whole message.
 *
 * Up to WHOLE_PIECES pieces (4 MiB) a message goes whole: cutting it
 * gains nothing there. A broadcast gains no speed from pieces (its own
 * pipeline runs best over a whole message, and small pieces slow it), so
 * it goes in pieces of WHOLE_PIECES pieces, for the yields alone. So do
 * allreduces and reduces when no rank of the group has sends or receives
 * to make between pieces (worker.c, "pieces by traffic").
 * doc/performance.md ("Where the time goes") has the figures.
 *
 * Every rank must cut a message at the same element offsets, whatever the
 * tensor's device: host tensors, device pointers given to a CUDA-aware
 * MPI and the staged CUDA pipeline (whose chunks are whole multiples of
 * the broadcast's piece, evmpi__cuda_configure) all cut at multiples of
 * the operation's piece. So EVMPI_PIECE must be the same on every rank of
 * a group. */
#include "pieces-internal.h"
#include "pg-internal.h"
#include "work-internal.h"

#include <sched.h>
#include <stdint.h>
#include <stdlib.h>

/* 1 MiB: 1 and 2 MiB pieces are the fastest at 2 and 4 ranks here (within
 * 3% of each other; 512 KiB 15-20% slower at 64 MiB, 8 MiB 10-35%), and
 * the smaller gives the loop thread twice the chances.
 *
 * A piece is a power of two from 16 bytes to 1 GiB. 16 is the largest
 * element (complex128), so every element size divides every piece and no
 * piece holds a fraction of an element (8 gave complex128 0 elements a
 * piece). Powers of two also nest: a piece divides the largest whole
 * message (4 pieces, at most 1 GiB) and every staged CUDA chunk (a power
 * of two rounded up to a multiple of that, cuda.c), so a device tensor is
 * cut where a host tensor is on another rank, which a 56-byte piece (224
 * whole, 3 complex128 elements a piece) or a 384 MiB one (whole messages
 * capped at 1 GiB) did not do. 1 GiB keeps the count of one MPI call
 * within an int for every element size. */
/* (The default and the range are EVMPI_PIECE's row in options.c.) */
#define MAX_PIECE ((size_t)1 << 30)
#define WHOLE_PIECES 4

bool evmpi__pow2_in(size_t v, size_t lo, size_t hi) {
  return v >= lo && v <= hi && (v & (v - 1)) == 0;
}

int evmpi__pieces_configure(const char *op, evmpi_pg_t *pg) {
  (void)op; /* EVMPI_PIECE's range is checked by options.c's table */
  pg->piece_bytes = (size_t)pg->settings.piece_bytes;
  return EVMPI_OK;
}

size_t evmpi__whole_max_bytes(const evmpi_pg_t *pg) {
  /* At most 1 GiB still: the count of one MPI call fits an int. */
  size_t b = pg->piece_bytes * WHOLE_PIECES;
  return b > MAX_PIECE ? MAX_PIECE : b;
}

int64_t evmpi__cut_elems(const evmpi_pg_t *pg, size_t piece_bytes, size_t esz,
                         int64_t total) {
  if (total <= 0 || (uint64_t)total <= evmpi__whole_max_bytes(pg) / esz)
    return total > 0 ? total : 1;
  /* Never 0: a piece smaller than an element would loop for ever. The
   * configured pieces are whole multiples of every element size. */
  int64_t per = (int64_t)(piece_bytes / esz);
  return per > 0 ? per : 1;
}

int evmpi__run_pieces(evmpi_work_t *w, evmpi_chunk_fn fn, void *data, int64_t off,
                      int64_t numel) {
  size_t esz = evmpi_dtype_size(w->tensors[0].dtype);
  /* Decided on the whole tensor, not on this chunk of a staged one. */
  int64_t per = evmpi__cut_elems(w->pg, w->piece_bytes, esz, w->numel);
  char *p = data;
  for (int64_t done = 0; done < numel;) {
    int n = (int)(numel - done < per ? numel - done : per);
    if (done > 0)
      sched_yield(); /* the loop thread may be waiting for this core */
    int rc = fn(w, p + (size_t)done * esz, off + done, n);
    if (rc != EVMPI_OK)
      return rc;
    done += n;
  }
  return EVMPI_OK;
}
