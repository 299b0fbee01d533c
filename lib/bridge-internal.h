/*
 * bridge-internal.h: completions to the loop: the loop-agnostic core.
 * Private to lib/; names with a double underscore are hidden from the shared
 * library.
 */
#ifndef EVMPI_BRIDGE_INTERNAL_H
#define EVMPI_BRIDGE_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#include <pthread.h>
#include <stdatomic.h>

#include "future-internal.h"

struct event;
struct event_base;

typedef struct evmpi_bridge evmpi_bridge_t;

/* A loop that watches a bridge's fd (loop_event.c has libevent's and the
 * group's own loop thread's): pg.c chooses one, the bridge calls it. */
typedef struct evmpi_loop_ops {
  /* At open: watch b's fd (in base, or in a loop of the group's own). */
  int (*attach)(evmpi_bridge_t *b, struct event_base *base, evmpi_pg_t *pg);
  /* At close, before the fd is closed: stop watching it. */
  void (*detach)(evmpi_bridge_t *b);
  /* The group's own loop thread only: after close (self: on that thread,
   * from a callback), and joining it, waiting until deadline_ns at most. */
  void (*closed)(evmpi_bridge_t *b, bool self);
  void (*join)(evmpi_bridge_t *b, int64_t deadline_ns);
} evmpi_loop_ops_t;

struct evmpi_bridge {
  const evmpi_loop_ops_t *loop; /* NULL for an external loop (EVMPI_LOOP_EXTERNAL:
                                   the application dispatches) */
  void (*teardown)(evmpi_pg_t *pg); /* pg.c's: a callback destroyed the group */
  struct event_base *base;  /* libevent's (loop_event.c), NULL for an external loop */
  struct event *ev;         /* on efd in base, NULL for an external loop */
  int efd;                  /* evmpi_pg_fd: readable while completions wait */
  atomic_bool attached;     /* open succeeded, close has not begun (evmpi_pg_fd
                               reads it on any thread) */
  void (*detach_cb)(evmpi_pg_t *, void *); /* external: evmpi_pg_set_detach's */
  evmpi_pg_t *detach_pg;
  void *detach_arg;
  int64_t p2p_last_ns;      /* loop thread only: when it last saw a send or receive done */
  int64_t p2p_gaps[2];      /* loop thread only: the last two gaps between those */
  int64_t p2p_poll_ns;      /* EVMPI_LOOP_P2P_POLL_US: the polling window while
                               sends and receives are active */
  int64_t hold_ns;          /* EVMPI_LOOP_HOLD_US: the most one wake-up holds
                               the loop */
  bool own_loop;            /* base and thread are ours (NULL base given) */
  pthread_t loop_thread;
  pthread_mutex_t mu;
  bool stop;                /* under mu: own loop should exit */
  bool dead;                /* under mu: no loop any more, deliver inline */
  bool dispatching;         /* loop thread only */
  uint64_t coll_delivered;  /* dispatching thread only: the sequence number of the last
                               collective whose completion it delivered (the worker's
                               unposted one may be it: evmpi__worker_run_here) */
  bool destroy_requested;   /* loop thread only */
  bool resume_poll;         /* loop thread only: the last dispatch ran out of time
                               while sends and receives flowed, and made the
                               eventfd readable to come back and poll on */
  bool made;                /* mu is made (bridge_fini destroys it) */
  evmpi_future_sink_t sink; /* what the group's futures post to */
  atomic_bool halted;       /* MPI is being finalized: no callback runs again */
  /* The delivery list is lock-free (bridge.c says why): posters push onto
   * `posted` (newest first) with a CAS, the loop thread takes it whole. */
  _Atomic(evmpi_future_t *) posted;
  atomic_bool signalled;    /* eventfd written, or the loop is draining */
  atomic_bool closed;       /* close has begun: posters deliver inline */
  atomic_int posting;       /* posters between their closed check and the
                               end of their eventfd write */
};

/* Opens the core and attaches it to loop (NULL: EVMPI_LOOP_EXTERNAL, the
 * application watches the fd), giving it base. teardown is run after a
 * batch in which a callback destroyed the group. */
int evmpi__bridge_open(evmpi_bridge_t *b, evmpi_pg_t *pg, const evmpi_loop_ops_t *loop,
                       struct event_base *base, void (*teardown)(evmpi_pg_t *pg));
/* The core of evmpi_pg_dispatch, for the adapters: runs what is posted,
 * in batches, and polls on within the group's windows; returns how many
 * futures it delivered. *gone: a callback destroyed the group, which is
 * now torn down (pg must not be touched). */
int evmpi__bridge_dispatch(evmpi_pg_t *pg, bool *gone);
/* Destroy or MPI_Finalize wants the group's own loop thread to stop. */
bool evmpi__bridge_stopping(evmpi_bridge_t *b);
/* Frees what open made, once the group's last reference is gone. */
void evmpi__bridge_fini(evmpi_bridge_t *b);
/* MPI is being finalized: no callback runs from now on (what is posted
 * stays posted), and our own loop thread is stopped and joined, waiting
 * until deadline_ns at most, unless it is the calling thread. The
 * application's event is left alone: its base may be gone already. */
void evmpi__bridge_halt(evmpi_bridge_t *b, int64_t deadline_ns);
/* Hands f to the loop (the caller has taken a reference for it); false when
 * the loop is gone, and the caller delivers f itself. */
bool evmpi__bridge_post(evmpi_bridge_t *b, evmpi_future_t *f);
/* Delivers what is left, then detaches from the loop (and stops our own
 * loop thread). Called by destroy, on the loop thread; once. */
void evmpi__bridge_close(evmpi_bridge_t *b);
bool evmpi__bridge_on_loop_thread(evmpi_bridge_t *b);

#endif /* EVMPI_BRIDGE_INTERNAL_H */
