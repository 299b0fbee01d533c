/*
 * groups-internal.h: every live group of the process, and its way to its
 * end. Private to lib/; names with a double underscore are hidden from the
 * shared library.
 */
#ifndef EVMPI_GROUPS_INTERNAL_H
#define EVMPI_GROUPS_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

void evmpi__groups_add(evmpi_pg_t *pg);
/* Its teardown has finished: waiters in evmpi_pg_wait_destroyed and
 * finalize go on. */
void evmpi__groups_remove(evmpi_pg_t *pg);
/* A group's way to its end, one way only, each step taken by one caller
 * with a compare-and-swap: destroy claims it (DEFERRED while a callback's
 * batch finishes), the teardown runs it (RUNNING), or MPI_Finalize stops a
 * group that is LIVE or DEFERRED (STOPPED: its later teardown does
 * nothing, its threads and MPI are gone). */
enum { EVMPI_PG_LIVE, EVMPI_PG_DEFERRED, EVMPI_PG_RUNNING, EVMPI_PG_STOPPED };
/* destroy: LIVE -> DEFERRED; true for the one caller that gets it. */
bool evmpi__groups_claim(evmpi_pg_t *pg);
/* The teardown starts: DEFERRED -> RUNNING; false when finalize stopped
 * the group first. */
bool evmpi__groups_begin_teardown(evmpi_pg_t *pg);
/* Before MPI_Finalize: stops every live group with stop (pg.c's
 * evmpi__pg_stop_at_finalize, given from above so that the registry calls
 * no module above it) and waits for teardowns under way, for at most
 * wait_ms in all; false when one was still running (a thread of it may
 * still be in MPI). */
bool evmpi__groups_stop_all(int wait_ms, void (*stop)(evmpi_pg_t *pg, int64_t deadline_ns));
/* Whether a group of the process was broken by a timeout (a peer may be
 * unreachable, and MPI_Finalize may wait for it): one still registered
 * whose collective timed out, or any whose send or receive missed its
 * deadline. The exit path bounds MPI_Finalize then. */
bool evmpi__groups_any_broken(void);

#endif /* EVMPI_GROUPS_INTERNAL_H */
