/* loop_event.c: the libevent adapters on top of the core (bridge.c): an
 * event on the group's fd in the application's event_base, and, for a
 * group created with a NULL base, an event_base of the group's own and a
 * thread that runs it. */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "loop_event-internal.h"
#include "bridge-internal.h"
#include "clock-internal.h"
#include "groups-internal.h"
#include "pg-internal.h"
#include "status-internal.h"

#include <event2/event.h>

static void on_readable(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  evmpi_pg_t *pg = arg;
  bool gone;
  evmpi__bridge_dispatch(pg, &gone);
  if (gone)
    return; /* a callback destroyed the group: nothing of it is left */
  evmpi_bridge_t *b = &pg->bridge;
  if (b->own_loop && evmpi__bridge_stopping(b))
    event_base_loopbreak(b->base); /* destroy or MPI_Finalize waits for it */
}

static int event_attach(evmpi_bridge_t *b, struct event_base *base, evmpi_pg_t *pg) {
  b->base = base;
  b->ev = event_new(base, b->efd, EV_READ | EV_PERSIST, on_readable, pg);
  if (!b->ev || event_add(b->ev, NULL) != 0) {
    if (b->ev)
      event_free(b->ev);
    b->ev = NULL;
    return evmpi__fail(EVMPI_ERR_NOMEM, "pg_create: cannot attach to the event loop");
  }
  return EVMPI_OK;
}

static void event_detach(evmpi_bridge_t *b) {
  event_free(b->ev);
  b->ev = NULL;
}

/* ---- the group's own loop thread -------------------------------------- */

static void *loop_main(void *arg) {
  evmpi_pg_t *pg = arg;
  struct event_base *base = pg->bridge.base;
  event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
  pthread_mutex_lock(&pg->bridge.mu);
  bool self_closed = pg->bridge.dead;
  pthread_mutex_unlock(&pg->bridge.mu);
  if (self_closed) {
    /* Destroyed from one of its own callbacks: clean up here, and only then
     * is the teardown over (finalize and evmpi_pg_wait_destroyed wait for
     * this). */
    event_base_free(base);
    evmpi__groups_remove(pg);
  }
  evmpi__pg_release(pg);
  return NULL;
}

static int thread_start(evmpi_bridge_t *b, struct event_base *given, evmpi_pg_t *pg) {
  (void)given; /* NULL: the base is the thread's own */
  struct event_base *base = event_base_new();
  if (!base)
    return evmpi__fail(EVMPI_ERR_NOMEM, "pg_create: cannot attach to the event loop");
  int rc = event_attach(b, base, pg);
  if (rc != EVMPI_OK) {
    event_base_free(base);
    b->base = NULL;
    return rc;
  }
  b->own_loop = true;
  evmpi__pg_retain(pg); /* the loop thread's */
  if (pthread_create(&b->loop_thread, NULL, loop_main, pg) != 0) {
    evmpi__pg_release(pg);
    event_detach(b);
    event_base_free(base);
    b->base = NULL;
    b->own_loop = false;
    return evmpi__fail(EVMPI_ERR_NOMEM, "pg_create: cannot start the loop thread");
  }
  return EVMPI_OK;
}

static void thread_closed(evmpi_bridge_t *b, bool self) {
  if (self) {
    /* We are in a callback on our own loop thread: stop the loop; the
     * thread frees the base as it leaves and nobody joins it. */
    event_base_loopbreak(b->base);
    pthread_detach(b->loop_thread);
  } else {
    event_base_free(b->base);
  }
}

static void thread_join(evmpi_bridge_t *b, int64_t deadline_ns) {
  /* A callback that never returns must not hold the process's exit. */
  int64_t left = deadline_ns - evmpi__now_ns();
  struct timespec ts = evmpi__timespec_after(CLOCK_REALTIME, left > 0 ? left : 0);
  if (pthread_timedjoin_np(b->loop_thread, NULL, &ts) != 0)
    pthread_detach(b->loop_thread);
}

const evmpi_loop_ops_t evmpi__loop_event_ops = {.attach = event_attach, .detach = event_detach};

const evmpi_loop_ops_t evmpi__loop_thread_ops = {
    .attach = thread_start, .detach = event_detach, .closed = thread_closed, .join = thread_join};
