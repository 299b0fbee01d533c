/*
 * gate-internal.h: the arrival gate before a group's collectives. Private
 * to lib/; names with a double underscore are hidden from the shared
 * library.
 */
#ifndef EVMPI_GATE_INTERNAL_H
#define EVMPI_GATE_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most bytes of data a gate carries (evmpi__gate_post_allreduce). */
#define EVMPI_GATE_DATA_MAX 1024

/* One round's message of a gate that carries data: the count, whether
 * every rank seen so far put its data in, whether every one was quiet
 * (below), then the data reduced so far. */
typedef struct {
  int64_t count;
  int64_t all_in;
  int64_t quiet;
  unsigned char data[EVMPI_GATE_DATA_MAX];
} evmpi_gate_msg_t;

/* One gate in flight: every rank of comm gives a count, and each learns
 * that all of them have reached the gate and the least count given. The
 * state lives where its messages can find it until the gate is passed
 * (MPI reads and writes out and in, or msg_out and msg_in, meanwhile). */
typedef struct evmpi_gate {
  MPI_Comm comm;
  int rank, size;
  int rounds, round; /* the dissemination's rounds, and the one in flight */
  int value;         /* the least count seen so far */
  bool quiet;        /* every rank seen so far was quiet */
  int out[2], in[2]; /* this round's message out and in: count, quiet */
  MPI_Request reqs[2];
  /* A gate that carries an allreduce (evmpi__gate_post_allreduce):
   * elems elements of dtype, reduced with op in every round into stage,
   * this rank's from data (NULL: this rank could not put them in). */
  bool carrying;
  bool all_in; /* every rank seen so far put its data in */
  void *data;
  size_t bytes;
  int elems;
  MPI_Datatype dtype;
  MPI_Op op;
  unsigned char stage[EVMPI_GATE_DATA_MAX];
  evmpi_gate_msg_t msg_out, msg_in;
} evmpi_gate_t;

/* Posts the gate's first round with this rank's count and whether this
 * rank is quiet (no point-to-point traffic of late: the worker then sends
 * large collectives to MPI in longer pieces, pieces.c); every rank learns
 * whether all of them were (evmpi__gate_quiet). comm must not be used for
 * tags EVMPI_GATE_TAG..EVMPI_GATE_TAG+63 otherwise. An MPI error code on
 * failure, nothing left in flight. */
int evmpi__gate_post(evmpi_gate_t *g, MPI_Comm comm, int rank, int size, int count, bool quiet);
/* Posts a gate that carries an in-place allreduce of elems elements of
 * dtype at data (bytes, at most EVMPI_GATE_DATA_MAX) with op, in a group
 * whose size is a power of two: recursive doubling over the same
 * messages, reduced in a copy of the gate's own. data is NULL on a rank
 * whose tensor cannot ride (device memory): it still takes part, with
 * the same message sizes, and then no rank's data is reduced (see
 * evmpi__gate_complete). Every rank must post the same kind of gate for a
 * collective. An MPI error code on failure, nothing left in flight. */
int evmpi__gate_post_allreduce(evmpi_gate_t *g, MPI_Comm comm, int rank, int size, int count,
                               bool quiet, void *data, int elems, MPI_Datatype dtype, size_t bytes,
                               MPI_Op op);
/* Tests without blocking, moving to the next round when one is over;
 * *passed once every round is. An MPI error code on failure. */
int evmpi__gate_test(evmpi_gate_t *g, bool *passed);
/* Waits until passed: tested back to back for 5 us, then with a yield
 * between tests until 50 us, then with sleeps of an eighth of the time
 * waited so far, at most sleep_max_ns (EVMPI_COLL_IDLE_POLL_US), each
 * followed by two tests. */
int evmpi__gate_wait(evmpi_gate_t *g, int64_t sleep_max_ns);
/* Once passed: whether the gate completed its collective. A gate that
 * carries an allreduce did when every rank put its data in: the result,
 * the same bit for bit on every rank (each round reduces the lower rank's
 * part with the higher rank's, in that order, on both), is then copied
 * to data. Otherwise the collective must still run, and data is as it
 * was. A plain gate answers true: every rank has reached it, which is all
 * a barrier needs. The same answer on every rank. */
bool evmpi__gate_complete(evmpi_gate_t *g);
/* The least count of all ranks, once passed. */
static inline int evmpi__gate_min(const evmpi_gate_t *g) { return g->value; }
/* Whether every rank posted the gate quiet, once passed. */
static inline bool evmpi__gate_quiet(const evmpi_gate_t *g) { return g->quiet; }

/* Tags EVMPI_GATE_TAG + round; a gate that carries data, + 32 + round. */
#define EVMPI_GATE_TAG 32000

#endif /* EVMPI_GATE_INTERNAL_H */
