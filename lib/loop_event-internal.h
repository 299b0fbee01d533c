/*
 * loop_event-internal.h: the loops built in: libevent's, and the group's own
 * loop thread. Private to lib/; names with a double underscore are hidden
 * from the shared library.
 */
#ifndef EVMPI_LOOP_EVENT_INTERNAL_H
#define EVMPI_LOOP_EVENT_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#include "bridge-internal.h"

struct event;
struct event_base;

/* libevent's event on the fd in the application's event_base, and the
 * group's own event_base with the thread that runs it (a NULL base). */
extern const evmpi_loop_ops_t evmpi__loop_event_ops;
extern const evmpi_loop_ops_t evmpi__loop_thread_ops;

#endif /* EVMPI_LOOP_EVENT_INTERNAL_H */
