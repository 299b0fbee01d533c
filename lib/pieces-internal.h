/*
 * pieces-internal.h: large element-wise collectives in pieces. Private to
 * lib/; names with a double underscore are hidden from the shared library.
 */
#ifndef EVMPI_PIECES_INTERNAL_H
#define EVMPI_PIECES_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#include "op_table-internal.h"

/* Reads EVMPI_PIECE (default 1 MiB; a power of two in 16 B..1 GiB) into
 * pg->piece_bytes; EVMPI_ERR_INVALID naming the variable otherwise. */
int evmpi__pieces_configure(const char *op, evmpi_pg_t *pg);
/* Whether v is a power of two in lo..hi (EVMPI_PIECE, EVMPI_CUDA_CHUNK). */
bool evmpi__pow2_in(size_t v, size_t lo, size_t hi);
/* The largest message that goes to MPI whole (4 pieces), and a
 * broadcast's piece: a multiple of every cut, so that a staged chunk can
 * be rounded to it. */
size_t evmpi__whole_max_bytes(const evmpi_pg_t *pg);
/* Elements per MPI call for a message of total elements of esz bytes cut
 * in pieces of piece_bytes: all of them up to evmpi__whole_max_bytes. */
int64_t evmpi__cut_elems(const evmpi_pg_t *pg, size_t piece_bytes, size_t esz,
                         int64_t total);
/* Runs fn on numel elements at data (element offset off into tensors[0])
 * in pieces of w->piece_bytes, yielding the CPU between pieces. The cut
 * is the same on every rank for the same numel. */
int evmpi__run_pieces(evmpi_work_t *w, evmpi_chunk_fn fn, void *data, int64_t off,
                      int64_t numel);

#endif /* EVMPI_PIECES_INTERNAL_H */
