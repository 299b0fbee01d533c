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

/* One gate in flight: every rank of comm gives a count, and each learns
 * that all of them have reached the gate and the least count given. The
 * state lives where its messages can find it until the gate is passed
 * (MPI reads and writes out and in meanwhile). */
typedef struct evmpi_gate {
  MPI_Comm comm;
  int rank, size;
  int rounds, round; /* the dissemination's rounds, and the one in flight */
  int value;         /* the least count seen so far */
  int out, in;       /* this round's message out and in */
  MPI_Request reqs[2];
} evmpi_gate_t;

/* Posts the gate's first round with this rank's count (comm must not be
 * used for tags EVMPI_GATE_TAG..EVMPI_GATE_TAG+31 otherwise). An MPI error
 * code on failure, nothing left in flight. */
int evmpi__gate_post(evmpi_gate_t *g, MPI_Comm comm, int rank, int size, int count);
/* Tests without blocking, moving to the next round when one is over;
 * *passed once every round is. An MPI error code on failure. */
int evmpi__gate_test(evmpi_gate_t *g, bool *passed);
/* Waits until passed: tested back to back for 5 us, then with a yield
 * between tests until 50 us, then with sleeps of an eighth of the time
 * waited so far, at most sleep_max_ns (EVMPI_COLL_IDLE_POLL_US), each
 * followed by two tests. */
int evmpi__gate_wait(evmpi_gate_t *g, int64_t sleep_max_ns);
/* The least count of all ranks, once passed. */
static inline int evmpi__gate_min(const evmpi_gate_t *g) { return g->value; }

#define EVMPI_GATE_TAG 32000

#endif /* EVMPI_GATE_INTERNAL_H */
