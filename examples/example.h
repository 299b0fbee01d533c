/* example.h: what the examples share, so that each of them shows only its
 * own pattern: the report of a failed call, the creation of its group,
 * and the one allreduce that every hello program runs and checks (hello.c
 * on libevent, hello_poll.c on poll(2), hello_uv.c on libuv, hello_glib.c
 * on GLib). Built into each example that uses it (Makefile.am). */
#ifndef EVMPI_EXAMPLE_H
#define EVMPI_EXAMPLE_H

#include <evmpi.h>

/* Prints "call: <evmpi_strerror(rc)>: <evmpi_last_error()>" on stderr and
 * returns 1, the exit status of an example whose call failed. */
int example_fail(const char *call, int rc);

/* Creates *pg over MPI_COMM_WORLD on base, the libevent loop that will
 * run its callbacks (NULL here is not a loop: it fails). Returns 0, or 1
 * after example_fail. */
int example_create_on(struct event_base *base, evmpi_pg_t **pg);

/* Creates *pg over MPI_COMM_WORLD for an external loop
 * (EVMPI_LOOP_EXTERNAL): no callback runs until the caller's loop calls
 * evmpi_pg_dispatch, itself or through an adapter. Returns 0, or 1 after
 * example_fail. */
int example_create_external(evmpi_pg_t **pg);

/* hello: every rank contributes rank + 1 to one allreduce(sum) over pg;
 * the completion checks the result against 1 + 2 + ... + size, prints it
 * (or the error), releases the work and calls done(h, arg), on whichever
 * thread the group's loop delivers completions on. */
typedef struct hello {
  evmpi_pg_t *pg; /* set by the caller before hello_start */
  double value;
  int rank, size;
  int ok;         /* 1 once the sum came back right */
  const char *by; /* how it was delivered, for the printed line */
  void (*done)(struct hello *h, void *arg);
  void *arg;
} hello_t;

/* Starts the allreduce on h->pg; by ("by libuv") ends the printed line.
 * Returns 0, or 1 after example_fail (done is then never called). */
int hello_start(hello_t *h, const char *by, void (*done)(hello_t *h, void *arg), void *arg);

#endif
