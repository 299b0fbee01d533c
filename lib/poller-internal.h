/*
 * poller-internal.h: the poller thread: point-to-point requests. Private to
 * lib/; names with a double underscore are hidden from the shared library.
 */
#ifndef EVMPI_POLLER_INTERNAL_H
#define EVMPI_POLLER_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct evmpi_poller {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* Taken before mu is released by whoever took finished works out of the
   * arrays, and held while it finishes them: the poller thread and the
   * loop thread both test, and this keeps their completions in the order
   * of their tests (never held while waiting for MPI). */
  pthread_mutex_t finish_mu;
  /* Issued, not yet tested: a lock-free stack, newest first (pushed by
   * the submitting threads, taken whole by whoever adopts under mu), then
   * in issue order in the adopting thread's FIFO until the arrays have
   * room for them. */
  _Atomic(evmpi_work_t *) incoming;
  evmpi_work_t *adopt_head, *adopt_tail; /* under mu */
  atomic_bool sleeping;      /* waiting on cv: a submission must signal */
  atomic_bool refusing;      /* stop has begun: submissions are refused */
  bool stopping;             /* under mu */
  int64_t stop_deadline;     /* under mu: when stopping, abandon sends left after
                                this (evmpi__now_ns; 0 = wait for them) */
  bool exited;               /* under mu: the thread has left */
  /* poller-owned (and abort's, under mu), in the order they were issued */
  MPI_Request *reqs;
  evmpi_work_t **works;
  uint64_t *chan;            /* each one's channel (kind, peer, tag: poller.c) */
  size_t n, cap;
  size_t nheld;              /* how many of them are held (work.held) */
  bool made;                 /* mu, finish_mu and cv are made */
  bool started;
  bool stopped;              /* evmpi__poller_stop has run */
  /* Until when (evmpi__now_ns) the loop thread polls and tests the
   * requests itself (bridge.c); the poller sleeps rather than spins then. */
  _Atomic int64_t loop_until;
  bool loop_wait;            /* under mu: asleep until loop_until */
  size_t cursor;             /* under mu: where the windowed tests' walk through
                                the middle of many pending requests is */
  int64_t full_at, full_ns;  /* poller thread: when its last test of every pending
                                request ended, and how long it took */
  int64_t last_activity;     /* under mu: when a request last finished (on
                                either thread) or was submitted */
  size_t staged;             /* under mu: pending works with a pinned CUDA staging
                                buffer, whose finish copies to the device: while
                                there are any, the loop thread leaves the tests to
                                the poller, so no device copy runs on it */
  /* Deadlines of sends and receives (evmpi_pg_set_p2p_timeout,
   * evmpi_work_set_deadline). */
  size_t large;              /* under mu: pending works of at least LARGE_BYTES
                                (poller.c), whose transfers need MPI's progress */
  int64_t large_bytes;       /* under mu: their bytes in all */
  atomic_int timeout_ms;     /* the group's p2p timeout for works issued from now
                                on (0 = none) */
  int64_t max_sleep_ns;      /* the longest sleep between tests (EVMPI_P2P_IDLE_POLL_MS) */
  int64_t next_deadline;     /* under mu: the earliest deadline of a pending work,
                                INT64_MAX when none; the poller wakes for it */
  char *broken;              /* under mu: why a p2p timeout broke the group, or NULL */
  atomic_bool is_broken;     /* broken != NULL, for submissions to check without mu */
} evmpi_poller_t;

int evmpi__poller_start(evmpi_poller_t *p, evmpi_pg_t *pg);
/* Hands an issued request's work to the poller (takes the in-flight ref). */
int evmpi__poller_submit(evmpi_poller_t *p, evmpi_work_t *w);
/* Cancels a pending receive: EVMPI_OK (completed aborted) or STATE. */
int evmpi__poller_cancel(evmpi_poller_t *p, evmpi_work_t *w);
/* Cancels pending receives, waits for sends until deadline_ns
 * (evmpi__now_ns; 0 = as long as they take) and abandons those left (they
 * fail with EVMPI_ERR_TIMEOUT; MPI may still deliver them), or, with
 * abandon_why, abandons everything at once (EVMPI_ERR_ABORTED with that
 * message); stops and joins the thread. Runs once. */
void evmpi__poller_stop(evmpi_poller_t *p, const char *abandon_why, int64_t deadline_ns);
/* Fails every pending request's work with status and why: receives are
 * cancelled, every request is freed (MPI may still use the buffers). */
void evmpi__poller_fail_pending(evmpi_poller_t *p, int status, const char *why);
/* One test of the pending requests from the calling thread (the loop
 * thread while it polls); never waits for the poller's lock. True when
 * some work completed, and then *done_ns is when (the clock read the
 * completions' records took); *pending says whether requests are left. */
bool evmpi__poller_test(evmpi_poller_t *p, bool *pending, int64_t *done_ns);
/* The loop thread polls and tests the requests itself until until
 * (evmpi__now_ns): the poller sleeps rather than spins meanwhile. The
 * window only grows, unless first (the dispatch's first poll) sets it. */
static inline void evmpi__poller_loop_window(evmpi_poller_t *p, int64_t until, bool first) {
  if (first || atomic_load_explicit(&p->loop_until, memory_order_relaxed) < until)
    atomic_store_explicit(&p->loop_until, until, memory_order_relaxed);
}
/* The loop thread has stopped polling: its window ends now, and the
 * poller is woken if it sleeps until the end of that window. */
void evmpi__poller_loop_done(evmpi_poller_t *p);
/* Whether the group has no send or receive pending and none submitted
 * or finished within the last quiet_ns: the arrival gate says so to the
 * peers (worker.c, "pieces by traffic"). Never waits for mu: false while
 * another thread holds it, which only a thread with requests to test does. */
bool evmpi__poller_quiet(evmpi_poller_t *p, int64_t quiet_ns);
/* Sets the group's p2p timeout for works issued from now on (0 = none). */
void evmpi__poller_set_timeout(evmpi_poller_t *p, int timeout_ms);
/* Sets w's deadline to timeout_ms after its issue (0 = none);
 * EVMPI_ERR_STATE once it has completed. */
int evmpi__poller_set_deadline(evmpi_poller_t *p, evmpi_work_t *w, int timeout_ms);
/* The internal hook for a group broken by a missed p2p deadline: copies
 * why into buf and returns true once one has (new submissions are then
 * refused, destroy abandons pending sends at once). */
bool evmpi__poller_broken(evmpi_poller_t *p, char *buf, size_t len);
/* True once any group of the process was broken by a p2p timeout: a
 * request was left to MPI towards a peer that may be gone, and
 * MPI_Finalize may wait for that peer (the exit path may skip it). */
bool evmpi__p2p_broken_any(void);
/* Frees what start made, once the group's last reference is gone. */
void evmpi__poller_fini(evmpi_poller_t *p);

#endif /* EVMPI_POLLER_INTERNAL_H */
