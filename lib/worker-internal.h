/*
 * worker-internal.h: the worker thread: collectives in order. Private to
 * lib/; names with a double underscore are hidden from the shared library.
 */
#ifndef EVMPI_WORKER_INTERNAL_H
#define EVMPI_WORKER_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"
#include "fuse-internal.h"
#include "gate-internal.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct evmpi_worker {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;         /* work queued, or closing */
  pthread_cond_t wd_cv;      /* the watchdog's: a work started or ended, or stop */
  pthread_cond_t exit_cv;    /* CLOCK_MONOTONIC: the thread left, or the group broke */
  evmpi_work_t *head, *tail; /* under mu */
  evmpi_work_t *running;     /* under mu: the collective in MPI now */
  uint64_t running_seq;      /* under mu: its sequence number (0 = none); works are
                                pooled, so the watchdog knows it by this, not by pointer */
  int64_t running_deadline;  /* under mu: ns when it times out, fixed when it
                                started (0 = no limit) */
  int running_timeout_ms;    /* under mu: the timeout that deadline came from */
  int timeout_ms;            /* under mu: 0 = none; for collectives that start later */
  char *broken;              /* under mu: why the group is broken, or NULL */
  atomic_bool is_broken;     /* broken != NULL, for submissions to check without mu */
  bool closing;              /* under mu */
  bool waiting;              /* under mu: asleep on cv (submit must signal) */
  /* Small collectives on the loop thread (evmpi__worker_run_here): */
  atomic_bool loop_claim;    /* written under mu: the queue's head was submitted by
                                a callback of this group while the worker was idle;
                                the loop thread runs it, or wakes the worker
                                (evmpi__worker_kick), and the worker leaves it alone */
  bool loop_running;         /* under mu: the running collective is the loop's (until
                                its completion is posted) */
  uint64_t unposted;         /* under mu: the sequence number of a collective the
                                worker retired and has not posted the completion of
                                yet (0 = none): the loop thread does not start a
                                claimed one meanwhile, whose completion it could
                                otherwise post first */
  evmpi_work_t *handoff;     /* under mu: the running collective, whose gate the loop
                                thread posted and left to the worker */
  bool handoff_passed;       /* under mu: the hand-off's gate is passed already (the
                                loop thread leaves a burst to fuse to the worker) */
  evmpi_gate_t gate;         /* the gate in flight (one at a time per group), its
                                poster's, then the worker's after a hand-off */
  int64_t credit;            /* collectives every rank holds, agreed at the last gate:
                                they run without one (written by whoever runs the
                                collective, read under mu while none runs) */
  bool credit_quiet;         /* the last gate found every rank quiet: its credit's
                                large collectives go in longer pieces (as credit) */
  evmpi_fuse_t fuse;         /* the worker's: allreduces fused into one call (fuse.c) */
  size_t fused_running;      /* under mu: how many of fuse.works are in the running
                                call with `running` (their leader), so that a group
                                that breaks fails them all; 0 = none */
  atomic_int queued;         /* works in the queue, read without mu while spinning */
  atomic_bool in_mpi;        /* a collective is running (the loop thread yields to it) */
  bool made;                 /* its mutex and condition variables are made */
  bool started;
  bool stopped;              /* evmpi__worker_stop has run; clean is its answer */
  bool clean;
  bool detached;             /* under mu: stop left it stuck in MPI */
  bool exited;               /* under mu: the thread is leaving */
  bool wd_stop;              /* under mu: the watchdog should leave */
  pthread_t watchdog;
  bool watchdog_started;     /* under mu */
} evmpi_worker_t;

int evmpi__worker_start(evmpi_worker_t *wk, evmpi_pg_t *pg);
/* Sets the operation timeout (starting the watchdog on first use);
 * EVMPI_ERR_ABORTED once the group is closing. */
int evmpi__worker_set_timeout(evmpi_worker_t *wk, evmpi_pg_t *pg, int timeout_ms);
/* The timeout set now (0 = none). */
int evmpi__worker_timeout(evmpi_worker_t *wk);
/* Copies why the group is broken into buf; false when it is not. */
bool evmpi__worker_broken(evmpi_worker_t *wk, char *buf, size_t len);
/* Whether a collective is queued or running: the loop thread's polling
 * then yields the CPU after every empty poll (bridge.c). Without a lock. */
bool evmpi__worker_active(evmpi_worker_t *wk);
/* The calling thread is the loop thread delivering wk's group's callbacks
 * (bridge.c, around each batch): a collective those callbacks submit to an
 * idle worker is left for the loop thread to run (evmpi__worker_run_here),
 * without a wake-up of the worker. Returns the previous one, for end. */
evmpi_worker_t *evmpi__worker_dispatch_begin(evmpi_worker_t *wk);
void evmpi__worker_dispatch_end(evmpi_worker_t *wk, evmpi_worker_t *prev);
/* On the loop thread, in the group's dispatch: runs the collective a
 * callback left for it, when the worker is idle: the arrival gate, tested
 * until gate_until_ns at most (then the collective is handed to the worker
 * with its gate posted; never more than 30 us), then the blocking call. True when it finished one
 * (its completion is posted to the bridge). */
bool evmpi__worker_run_here(evmpi_worker_t *wk, evmpi_pg_t *pg, int64_t gate_until_ns);
/* Hands a collective left for the loop thread to the worker: the loop
 * leaves its dispatch, or someone waits for a future. Cheap when none is. */
void evmpi__worker_kick(evmpi_worker_t *wk);
/* Queues w (takes the in-flight reference); EVMPI_ERR_ABORTED once closing. */
int evmpi__worker_submit(evmpi_worker_t *wk, evmpi_work_t *w);
/* Removes w if it has not started; true when it did. */
bool evmpi__worker_cancel(evmpi_worker_t *wk, evmpi_work_t *w);
/* Refuses new work, runs what is queued and stops the thread. When
 * deadline_ns (evmpi__now_ns, 0 = none) passes first, the group is broken:
 * the running collective fails with EVMPI_ERR_TIMEOUT, the queue with
 * EVMPI_ERR_ABORTED, and the thread, stuck in MPI, is left to finish on
 * its own. True when the thread stopped cleanly. Runs once; later calls
 * return the first answer. */
bool evmpi__worker_stop(evmpi_worker_t *wk, int64_t deadline_ns);
/* Fails everything queued with EVMPI_ERR_ABORTED and refuses new work. */
void evmpi__worker_fail_queued(evmpi_worker_t *wk, const char *why);
/* Waits up to timeout_ms for the workers that stop left inside MPI
 * (broken groups) to leave it; false when some are still there. */
bool evmpi__worker_wait_detached(int timeout_ms);
/* Frees what start made, once the group's last reference is gone. */
void evmpi__worker_fini(evmpi_worker_t *wk);

#endif /* EVMPI_WORKER_INTERNAL_H */
