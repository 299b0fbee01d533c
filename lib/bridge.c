/* bridge.c: the loop-agnostic core. Library threads hand finished futures
 * to the group's loop through a lock-free list and an eventfd
 * (evmpi_pg_fd); whichever loop watches that fd calls the dispatch below
 * (evmpi_pg_dispatch), which runs their callbacks in batches on its own
 * thread. The loops themselves are adapters: libevent and the group's own
 * loop thread in loop_event.c, libuv and GLib in loop_uv.c and
 * loop_glib.c, or the application's own code. */
#include "bridge-internal.h"
#include "clock-internal.h"
#include "future-internal.h"
#include "pg-internal.h"
#include "poller-internal.h"
#include "status-internal.h"
#include "work-internal.h"
#include "worker-internal.h"

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void drain_eventfd(int fd) {
  uint64_t v;
  while (read(fd, &v, sizeof v) < 0 && errno == EINTR)
    ;
}

static void signal_eventfd(int fd) {
  uint64_t one = 1;
  while (write(fd, &one, sizeof one) < 0 && errno == EINTR)
    ;
}

/* Runs the callbacks of f and the futures after it, counting them into
 * *count; true when one of them was a send's or a receive's. */
static bool deliver_list(evmpi_bridge_t *b, evmpi_future_t *f, int *count) {
  bool p2p = false;
  while (f) {
    ++*count;
    evmpi_future_t *next = f->next_delivery;
    f->next_delivery = NULL;
    if (f->owner && f->owner->kind == EVMPI_WORK_COLLECTIVE)
      b->coll_delivered = f->owner->seq; /* read before f may go */
    else
      p2p |= f->owner != NULL;
    if (atomic_load_explicit(&b->halted, memory_order_acquire))
      evmpi_future_release(f); /* MPI is being finalized: no callback runs */
    else
      evmpi__future_deliver(f);
    f = next;
  }
  return p2p;
}

/* Takes everything posted so far, oldest first. The list is pushed newest
 * first; one thread's posts (the worker's collectives) so come out in the
 * order it made them. Taking the whole list with one exchange, never
 * popping single entries, is what keeps the push free of the ABA problem. */
static evmpi_future_t *take_posted(evmpi_bridge_t *b) {
  return evmpi__future_list_reverse(
      atomic_exchange_explicit(&b->posted, NULL, memory_order_acquire));
}

/* After a batch, while the group still has work in flight, the loop
 * thread polls for the next completion this long before it returns to its
 * loop: a callback that submits the next operation (a chain) then gets its
 * completion without an eventfd write and a wake-up of the loop, each a
 * system call. It tests the pending sends and receives itself, and yields
 * the CPU after polls that finished nothing (below); one dispatch never
 * holds the loop longer than EVMPI_LOOP_HOLD_US, so timers and other
 * events stay on time. */
#define EVMPI_LOOP_SPIN_NS 30000
/* While point-to-point traffic is active (this wake-up delivered a send's
 * or a receive's callback, or finished one itself) and requests are still
 * pending, the window is EVMPI_LOOP_P2P_POLL_US: a reply to a message just
 * sent comes within it, and the loop thread, which tests the requests
 * itself, finishes it with no thread handoff. A receive that merely stays
 * posted (a server's) does not lengthen the window of unrelated
 * completions. Both are settings (options.c's table): an application that
 * streams large messages and has nothing else on its loop can let the loop
 * thread keep the stream, at the price of its other events being that
 * late (doc/performance.md has the figures). */
/* While a collective is queued or running, the loop thread yields after
 * every empty poll, so the worker that shares the core runs. Otherwise
 * nothing of the group's needs this core (the poller sleeps while the
 * loop polls), and it spins as a blocking MPI call does: the scheduler
 * shares the core with other threads and processes, and Open MPI's
 * mpi_yield_when_idle (set when a node is oversubscribed) makes each
 * empty test yield. A yield of its own every 20 us gave the core away for
 * a whole time slice each time another thread wanted it, and a busy
 * process beside the loop slowed a stream many times over
 * (doc/performance.md, "The loop thread's own yield"). */
/* The polling window for sends and receives: EVMPI_LOOP_P2P_POLL_US while
 * they complete in a stream (the last two gaps between completions the
 * loop thread saw were within it), so that a reply a large transfer or a
 * slow network keeps waiting for is still caught by the loop thread; at
 * most EVMPI_LOOP_P2P_SHORT_NS otherwise, so that a service whose messages
 * come seldom does not poll after each of them for long. */
#define EVMPI_LOOP_P2P_SHORT_NS 200000

static void saw_p2p(evmpi_bridge_t *b, int64_t now) {
  int64_t gap = b->p2p_last_ns ? now - b->p2p_last_ns : INT64_MAX;
  b->p2p_gaps[0] = b->p2p_gaps[1];
  b->p2p_gaps[1] = gap;
  b->p2p_last_ns = now;
}

static int64_t p2p_window(const evmpi_bridge_t *b) {
  bool stream = b->p2p_gaps[0] <= b->p2p_poll_ns && b->p2p_gaps[1] <= b->p2p_poll_ns;
  if (stream || b->p2p_poll_ns < EVMPI_LOOP_P2P_SHORT_NS)
    return b->p2p_poll_ns;
  return EVMPI_LOOP_P2P_SHORT_NS;
}

int evmpi__bridge_dispatch(evmpi_pg_t *pg, bool *gone) {
  evmpi_bridge_t *b = &pg->bridge;
  int count = 0;
  *gone = false;
  drain_eventfd(b->efd);
  if (atomic_load(&b->halted))
    return 0; /* MPI is being finalized: nothing more is delivered. */
  pthread_mutex_lock(&b->mu);
  bool stop = b->stop; /* close writes the eventfd after setting it */
  pthread_mutex_unlock(&b->mu);
  int64_t give_up = evmpi__now_ns() + b->hold_ns;
  bool polled = false; /* we set the poller's loop_until */
  /* Collectives our callbacks submit to an idle worker are ours to run
   * (worker.c, "small collectives on the loop thread"); what we leave
   * goes to the worker when we return. */
  evmpi_worker_t *prev_dispatch = evmpi__worker_dispatch_begin(&pg->worker);
  /* A dispatch that came back for a stream of sends and receives (see the
   * end) polls even when nothing is posted yet. */
  bool resumed = b->resume_poll;
  b->resume_poll = false;
  bool p2p_active = resumed;
  /* The poller sleeps through the window the last dispatch left (see the
   * end): ours to end too, even if this one never polls. */
  bool window_ours = resumed;
  for (;;) {
    /* signalled stays set while we poll: posters then skip the eventfd. */
    if (atomic_load(&b->halted))
      break;
    evmpi_future_t *batch = take_posted(b);
    if (!batch && !resumed)
      break;
    resumed = false;
    b->dispatching = true;
    if (deliver_list(b, batch, &count)) {
      p2p_active = true;
      saw_p2p(b, evmpi__now_ns());
    }
    b->dispatching = false;
    if (b->destroy_requested) {
      /* A callback destroyed this group; now that the batch is over it can
       * go. b must not be touched after this. */
      evmpi__worker_dispatch_end(&pg->worker, prev_dispatch);
      b->teardown(pg);
      *gone = true;
      return count;
    }
    if (stop || atomic_load_explicit(&pg->inflight, memory_order_relaxed) == 0)
      break;
    /* Point-to-point requests are tested here too (evmpi__poller_test
     * says why); a collective's completion comes from the worker. */
    int64_t start = evmpi__now_ns(), until = start + EVMPI_LOOP_SPIN_NS;
    bool long_window = false;
    for (;;) {
      if (until > give_up)
        until = give_up;
      if (evmpi__worker_run_here(&pg->worker, pg, until))
        break; /* its completion is posted */
      bool pending;
      int64_t now = 0;
      bool finished = evmpi__poller_test(&pg->poller, &pending, &now);
      if (!finished)
        now = evmpi__now_ns();
      if (finished) {
        p2p_active = true;
        saw_p2p(b, now);
      }
      if (p2p_active && pending && !long_window) {
        long_window = true;
        until = start + p2p_window(b);
      }
      if (until > give_up)
        until = give_up;
      /* The poller sleeps a window past ours: this dispatch either comes
       * back to poll on (and moves the window) or says it is done
       * (evmpi__poller_loop_done), so a poller that woke at our own end
       * would only race us for the completions there. Its wake-up is for
       * a loop thread held elsewhere: a long callback, the loop's other
       * events. */
      evmpi__poller_loop_window(&pg->poller, until + p2p_window(b), !polled);
      polled = true;
      if (atomic_load_explicit(&b->posted, memory_order_relaxed) || now >= until)
        break;
      if (!finished && evmpi__worker_active(&pg->worker))
        sched_yield();
    }
    if (evmpi__now_ns() >= give_up)
      break;
  }
  evmpi__worker_dispatch_end(&pg->worker, prev_dispatch);
  /* Out of time while sends and receives still flow: the loop's other
   * events run, and then this dispatch goes on polling (the eventfd is
   * made readable for it), rather than leaving the stream to the poller
   * and an eventfd wake-up. Every wake-up that ran out of time that way
   * cost a round trip several times a normal one, once per
   * EVMPI_LOOP_HOLD_US of traffic (doc/performance.md). The poller waits
   * meanwhile. Traffic that stops for a polling window ends it: what
   * counts is the last completion seen, not the last resume. A stream
   * whose last test finished everything in flight, with the callbacks
   * that go on with it not yet run (they are posted), flows on too. */
  int64_t now = evmpi__now_ns();
  if (!stop && now >= give_up && b->p2p_last_ns && now - b->p2p_last_ns < p2p_window(b) &&
      !atomic_load(&b->halted) &&
      (atomic_load_explicit(&pg->inflight, memory_order_relaxed) > 0 ||
       atomic_load_explicit(&b->posted, memory_order_relaxed))) {
    b->resume_poll = true;
    evmpi__poller_loop_window(&pg->poller, now + p2p_window(b), false);
    atomic_store(&b->signalled, true);
    signal_eventfd(b->efd);
    return count;
  }
  if (polled || window_ours) { /* the poller may be asleep until our window's end */
    evmpi__poller_loop_done(&pg->poller);
  }
  /* Leaving: a post from now on must write the eventfd. One that came after
   * our last take but saw signalled still set skipped its write; the
   * sequentially consistent store and load below see it (its push precedes
   * its exchange on signalled), and we write for it. */
  atomic_store(&b->signalled, false);
  if (atomic_load(&b->posted) && !atomic_exchange(&b->signalled, true))
    signal_eventfd(b->efd);
  return count;
}

bool evmpi__bridge_stopping(evmpi_bridge_t *b) {
  if (atomic_load(&b->halted))
    return true;
  pthread_mutex_lock(&b->mu);
  bool stop = b->stop;
  pthread_mutex_unlock(&b->mu);
  return stop;
}

/* The sink futures of this group post to (future.c knows only the sink). */
static bool sink_post(evmpi_future_sink_t *sink, evmpi_future_t *f) {
  return evmpi__bridge_post(evmpi__container_of(sink, evmpi_bridge_t, sink), f);
}

static bool post_list(evmpi_bridge_t *b, evmpi_future_t *newest, evmpi_future_t *oldest);

/* A batch of this group's finished futures (evmpi_future_batch_t). */
static bool sink_post_list(evmpi_future_sink_t *sink, evmpi_future_t *newest,
                           evmpi_future_t *oldest) {
  return post_list(evmpi__container_of(sink, evmpi_bridge_t, sink), newest, oldest);
}

/* A future of this group's is waited for: see evmpi__worker_kick. */
static void sink_kick(evmpi_future_sink_t *sink) {
  evmpi_bridge_t *b = evmpi__container_of(sink, evmpi_bridge_t, sink);
  evmpi__worker_kick(&evmpi__container_of(b, evmpi_pg_t, bridge)->worker);
}

int evmpi__bridge_open(evmpi_bridge_t *b, evmpi_pg_t *pg, const evmpi_loop_ops_t *loop,
                       struct event_base *base, void (*teardown)(evmpi_pg_t *pg)) {
  memset(b, 0, sizeof *b);
  b->sink.ref = &pg->ref;
  b->sink.post = sink_post;
  b->sink.post_list = sink_post_list;
  b->sink.kick = sink_kick;
  b->teardown = teardown;
  b->efd = -1;
  pthread_mutex_init(&b->mu, NULL);
  b->made = true;
  atomic_init(&b->halted, false);
  atomic_init(&b->attached, false);
  /* Ranges checked by options.c's table. */
  b->p2p_poll_ns = pg->settings.loop_p2p_poll_us * 1000;
  b->p2p_gaps[0] = b->p2p_gaps[1] = INT64_MAX;
  b->hold_ns = pg->settings.loop_hold_us * 1000;
  atomic_init(&b->posted, NULL);
  atomic_init(&b->signalled, false);
  atomic_init(&b->closed, false);
  atomic_init(&b->posting, 0);
  b->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (b->efd < 0)
    return evmpi__fail(EVMPI_ERR_NOMEM, "pg_create: eventfd failed: %s", strerror(errno));
  b->loop = loop;
  int rc = loop ? loop->attach(b, base, pg) : EVMPI_OK;
  if (rc != EVMPI_OK) {
    close(b->efd);
    b->efd = -1;
    return rc;
  }
  atomic_store(&b->attached, true);
  return EVMPI_OK;
}

/* Lock-free, so that a worker or poller finishing works never waits for
 * the loop thread (which polled the old list's mutex while it spun, 74% of
 * the futex calls of a ping-pong) and the eventfd is written outside any
 * lock. A batch (newest to oldest, linked newest first: the list's own
 * order) goes on with one exchange, as one future does. `posting` stands
 * in for the lock that made close safe: close sets
 * `closed`, then waits for `posting` to fall to zero before it takes what
 * is left and closes the eventfd, so no poster writes to a closed fd. */
static bool post_list(evmpi_bridge_t *b, evmpi_future_t *newest, evmpi_future_t *oldest) {
  atomic_fetch_add(&b->posting, 1);
  if (atomic_load(&b->closed)) {
    atomic_fetch_sub(&b->posting, 1);
    return false;
  }
  evmpi_future_t *head = atomic_load_explicit(&b->posted, memory_order_relaxed);
  do
    oldest->next_delivery = head;
  while (!atomic_compare_exchange_weak_explicit(&b->posted, &head, newest, memory_order_seq_cst,
                                                memory_order_relaxed));
  /* One write per batch: the first post after the loop left writes. A
   * load that sees signalled set is ordered, as the exchange would be,
   * before the dispatch's clearing store (both sequentially consistent),
   * so the dispatch's last look at posted still sees this push; it saves
   * a locked instruction per post while the loop thread polls. */
  if (!atomic_load(&b->signalled) && !atomic_exchange(&b->signalled, true))
    signal_eventfd(b->efd);
  atomic_fetch_sub_explicit(&b->posting, 1, memory_order_release);
  return true;
}

bool evmpi__bridge_post(evmpi_bridge_t *b, evmpi_future_t *f) { return post_list(b, f, f); }

bool evmpi__bridge_on_loop_thread(evmpi_bridge_t *b) {
  return b->own_loop && pthread_equal(pthread_self(), b->loop_thread);
}

void evmpi__bridge_close(evmpi_bridge_t *b) {
  if (!atomic_exchange(&b->attached, false))
    return; /* never opened, or closed already */
  bool self = evmpi__bridge_on_loop_thread(b);
  if (b->own_loop && !self) {
    /* Let our loop thread deliver what is queued, then stop it. */
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    pthread_mutex_unlock(&b->mu);
    signal_eventfd(b->efd);
    pthread_join(b->loop_thread, NULL);
  }
  pthread_mutex_lock(&b->mu);
  b->dead = true;
  pthread_mutex_unlock(&b->mu);
  /* From here posters deliver inline; wait for those already past their
   * check (a push and a write: a few instructions, no lock, no MPI). */
  atomic_store(&b->closed, true);
  while (atomic_load(&b->posting) != 0)
    sched_yield();
  int count = 0;
  deliver_list(b, take_posted(b), &count);
  /* The loop stops watching the fd before it is closed: libevent's event
   * goes, an external loop's adapter is told (evmpi_pg_set_detach). */
  if (b->ev)
    b->loop->detach(b);
  if (b->detach_cb) {
    void (*cb)(evmpi_pg_t *, void *) = b->detach_cb;
    b->detach_cb = NULL;
    cb(b->detach_pg, b->detach_arg);
  }
  close(b->efd);
  b->efd = -1;
  if (b->own_loop)
    b->loop->closed(b, self);
}

void evmpi__bridge_halt(evmpi_bridge_t *b, int64_t deadline_ns) {
  atomic_store(&b->halted, true);
  if (!atomic_load(&b->attached) || !b->own_loop || evmpi__bridge_on_loop_thread(b))
    return;
  pthread_mutex_lock(&b->mu);
  b->stop = true;
  pthread_mutex_unlock(&b->mu);
  signal_eventfd(b->efd);
  b->loop->join(b, deadline_ns);
}

/* ---- the public core: any loop drives a group with these ------------------ */

int evmpi_pg_fd(evmpi_pg_t *pg) {
  if (!pg)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_fd: pg is NULL");
  if (!atomic_load(&pg->bridge.attached))
    return evmpi__fail(EVMPI_ERR_STATE, "pg_fd: the group is being destroyed");
  return pg->bridge.efd;
}

int evmpi_pg_dispatch(evmpi_pg_t *pg) {
  if (!pg)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_dispatch: pg is NULL");
  evmpi_bridge_t *b = &pg->bridge;
  if (b->own_loop && !evmpi__bridge_on_loop_thread(b))
    return evmpi__fail(EVMPI_ERR_STATE, "pg_dispatch: the group's own loop thread dispatches "
                       "its callbacks (it was created with a NULL base and EVMPI_LOOP_DEFAULT)");
  if (b->dispatching)
    return evmpi__fail(EVMPI_ERR_STATE, "pg_dispatch: called from one of the group's "
                       "callbacks (dispatch is not re-entrant)");
  if (!atomic_load(&b->attached))
    return evmpi__fail(EVMPI_ERR_STATE, "pg_dispatch: the group is being destroyed");
  bool gone;
  return evmpi__bridge_dispatch(pg, &gone);
}

int evmpi_pg_set_detach(evmpi_pg_t *pg, void (*cb)(evmpi_pg_t *pg, void *arg), void *arg) {
  if (!pg)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_set_detach: pg is NULL");
  evmpi_bridge_t *b = &pg->bridge;
  if (b->loop) /* NULL only for EVMPI_LOOP_EXTERNAL */
    return evmpi__fail(EVMPI_ERR_STATE, "pg_set_detach: the group was not created with "
                       "EVMPI_LOOP_EXTERNAL (its loop is evmpi's to detach)");
  if (!atomic_load(&b->attached))
    return evmpi__fail(EVMPI_ERR_STATE, "pg_set_detach: the group is being destroyed");
  if (cb && b->detach_cb)
    return evmpi__fail(EVMPI_ERR_STATE, "pg_set_detach: a detach callback is set already "
                       "(the group is attached to a loop; set NULL first to replace it)");
  b->detach_cb = cb;
  b->detach_pg = pg;
  b->detach_arg = arg;
  return EVMPI_OK;
}

void evmpi__bridge_fini(evmpi_bridge_t *b) {
  if (!b->made)
    return;
  pthread_mutex_destroy(&b->mu);
  b->made = false;
}
