/*
 * fuse-internal.h: a burst of queued small allreduces run as one
 * MPI_Allreduce (fuse.c). Private to lib/; names with a double underscore
 * are hidden from the shared library.
 */
#ifndef EVMPI_FUSE_INTERNAL_H
#define EVMPI_FUSE_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most works one fused call holds. */
#define EVMPI_FUSE_MAX_WORKS 128

/* One fused set and the worker's packing buffer, which outlives the set
 * (grown to the largest set, freed by evmpi__fuse_fini). The set lives
 * on the worker thread; the watchdog reads works[0..n) under the worker's
 * mutex, to fail them when the call overruns. */
typedef struct evmpi_fuse {
  evmpi_work_t *works[EVMPI_FUSE_MAX_WORKS]; /* oldest first; works[0] leads */
  int status[EVMPI_FUSE_MAX_WORKS];          /* each work's outcome so far */
  size_t n;
  int64_t bytes; /* the packed size */
  void *pack;
  size_t cap;
} evmpi_fuse_t;

/* Whether w can lead a set: an allreduce that did not ride its gate, with
 * room for another under limit bytes (the group's EVMPI_COLL_FUSE_BYTES,
 * 0 = never). The answer depends on the call and the setting only, never
 * on where this rank's tensor lives, so it is the same on every rank of a
 * correct program. */
bool evmpi__fuse_can_lead(const evmpi_work_t *w, int64_t limit);
/* Starts a set led by w, when w can lead one. */
bool evmpi__fuse_lead(evmpi_fuse_t *f, evmpi_work_t *w, int64_t limit);
/* Adds w to the set when it is an allreduce of the leader's dtype and op
 * and the set stays within limit bytes and EVMPI_FUSE_MAX_WORKS; the
 * same on every rank, as above. */
bool evmpi__fuse_add(evmpi_fuse_t *f, evmpi_work_t *w, int64_t limit);
/* Packs the set's tensors, reduces the pack in place with one
 * MPI_Allreduce (every rank makes it, whatever failed before it here: the
 * others are in it) and divides an average. Each work's outcome goes to
 * status[i], its message to the work. The tensors are written only by
 * evmpi__fuse_unpack. */
void evmpi__fuse_reduce(evmpi_fuse_t *f);
/* Copies the reduced pack back into the tensors of the works whose
 * status is still EVMPI_OK; a copy that fails fails its work. */
void evmpi__fuse_unpack(evmpi_fuse_t *f);
void evmpi__fuse_fini(evmpi_fuse_t *f);

#endif /* EVMPI_FUSE_INTERNAL_H */
