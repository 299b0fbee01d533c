/* bridge.c: the loop bridge. Library threads hand finished futures to the
 * group's event_base through an eventfd; the loop thread drains them in
 * batches and runs their callbacks. A group created without a base gets
 * its own event_base and a thread that runs it. */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "evmpi-internal.h"

#include <errno.h>
#include <event2/event.h>
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

/* Runs the callbacks of f and the futures after it; true when one of them
 * was a send's or a receive's. */
static bool deliver_list(evmpi_bridge_t *b, evmpi_future_t *f) {
  bool p2p = false;
  while (f) {
    evmpi_future_t *next = f->next_delivery;
    f->next_delivery = NULL;
    p2p |= f->owner && f->owner->kind != EVMPI_WORK_COLLECTIVE;
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
  evmpi_future_t *f = atomic_exchange_explicit(&b->posted, NULL, memory_order_acquire);
  evmpi_future_t *fifo = NULL;
  while (f) {
    evmpi_future_t *next = f->next_delivery;
    f->next_delivery = fifo;
    fifo = f;
    f = next;
  }
  return fifo;
}

/* After a batch, while the group still has work in flight, the loop
 * thread polls for the next completion this long before it returns to
 * libevent: a callback that submits the next operation (a chain) then
 * gets its completion without an eventfd write and an epoll wake-up,
 * which cost 10-15 us each on this class of machine. It tests the pending
 * sends and receives itself, and yields the CPU after polls that
 * finished nothing (below); one handler never holds the loop longer than
 * EVMPI_LOOP_MAX_NS, so timers and other events stay on time. */
#define EVMPI_LOOP_SPIN_NS 30000
#define EVMPI_LOOP_MAX_NS 500000 /* default of EVMPI_LOOP_HOLD_US */
/* While point-to-point traffic is active (this wake-up delivered a send's
 * or a receive's callback, or finished one itself) and requests are still
 * pending, the window is longer: a reply to a message just sent (a
 * ping-pong of up to 1 MiB here) comes within it, and the loop thread,
 * which tests the requests itself, finishes it with no thread handoff. A
 * receive that merely stays posted (a server's) does not lengthen the
 * window of unrelated completions. Still within EVMPI_LOOP_MAX_NS per
 * wake-up. */
#define EVMPI_LOOP_P2P_SPIN_NS 200000 /* default of EVMPI_LOOP_P2P_POLL_US */
/* Both can be set, in microseconds, when a group is created: an
 * application that streams large messages and has nothing else on its
 * loop can let the loop thread keep the stream (a 1 MiB ping-pong is
 * 1.37x raw with the defaults; with 3000 and 5000, 64 KiB to 4 MiB ran at
 * 0.99-1.13x), at the price of its other events being that late. */
#define EVMPI_LOOP_US_MAX 1000000
/* While no collective is queued or running, nothing of the group's needs
 * this core (the poller sleeps while the loop polls), so the loop thread
 * yields only every EVMPI_LOOP_P2P_YIELD_NS rather than after every empty
 * poll: a sched_yield is a system call (1-1.5 us here), and an 8 B
 * ping-pong went from 1.6-1.9 to 0.6 us a half round trip (4 ranks on 2
 * cores: 4.0 to 1.3 us). Another process on the core still gets it within
 * that time. With a collective in flight it yields after every empty
 * poll, so the worker that shares the core runs. */
#define EVMPI_LOOP_P2P_YIELD_NS 20000

static void on_eventfd(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  evmpi_pg_t *pg = arg;
  evmpi_bridge_t *b = &pg->bridge;
  drain_eventfd(fd);
  if (atomic_load(&b->halted)) {
    /* MPI is being finalized: nothing more is delivered. */
    if (b->own_loop)
      event_base_loopbreak(b->base);
    return;
  }
  pthread_mutex_lock(&b->mu);
  bool stop = b->stop; /* close writes the eventfd after setting it */
  pthread_mutex_unlock(&b->mu);
  int64_t give_up = evmpi__now_ns() + b->hold_ns;
  bool polled = false; /* we set the poller's loop_until */
  bool p2p_active = false;
  for (;;) {
    /* signalled stays set while we poll: posters then skip the eventfd. */
    if (atomic_load(&b->halted))
      break;
    evmpi_future_t *batch = take_posted(b);
    if (!batch)
      break;
    b->dispatching = true;
    p2p_active |= deliver_list(b, batch);
    b->dispatching = false;
    if (b->destroy_requested) {
      /* A callback destroyed this group; now that the batch is over it can
       * go. b must not be touched after this. */
      evmpi__pg_teardown(pg);
      return;
    }
    if (stop || atomic_load_explicit(&pg->inflight, memory_order_relaxed) == 0)
      break;
    /* Point-to-point requests are tested here too (evmpi__poller_test
     * says why); a collective's completion comes from the worker. */
    int64_t start = evmpi__now_ns(), until = start + EVMPI_LOOP_SPIN_NS;
    int64_t last_yield = start;
    bool long_window = false;
    for (;;) {
      bool pending;
      bool finished = evmpi__poller_test(&pg->poller, &pending);
      p2p_active |= finished;
      if (p2p_active && pending && !long_window) {
        long_window = true;
        until = start + b->p2p_poll_ns;
      }
      if (until > give_up)
        until = give_up;
      if (!polled || atomic_load_explicit(&pg->poller.loop_until, memory_order_relaxed) < until) {
        polled = true;
        atomic_store_explicit(&pg->poller.loop_until, until, memory_order_relaxed);
      }
      int64_t now = evmpi__now_ns();
      if (atomic_load_explicit(&b->posted, memory_order_relaxed) || now >= until)
        break;
      if (!finished && (now - last_yield >= EVMPI_LOOP_P2P_YIELD_NS ||
                        evmpi__worker_active(&pg->worker))) {
        sched_yield();
        last_yield = now;
      }
    }
    if (evmpi__now_ns() >= give_up)
      break;
  }
  if (polled) { /* the poller may be asleep until our window's end */
    atomic_store_explicit(&pg->poller.loop_until, 0, memory_order_relaxed);
    evmpi__poller_loop_done(&pg->poller);
  }
  /* Leaving: a post from now on must write the eventfd. One that came after
   * our last take but saw signalled still set skipped its write; the
   * sequentially consistent store and load below see it (its push precedes
   * its exchange on signalled), and we write for it. */
  atomic_store(&b->signalled, false);
  if (atomic_load(&b->posted) && !atomic_exchange(&b->signalled, true))
    signal_eventfd(b->efd);
  if (stop)
    event_base_loopbreak(b->base);
}

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

/* One of the EVMPI_LOOP_* variables, in microseconds, into *ns. */
static int loop_setting(const char *name, uint64_t min_us, int64_t def_ns, int64_t *ns) {
  *ns = def_ns;
  const char *v = getenv(name);
  if (!v || !*v)
    return EVMPI_OK;
  uint64_t us = 0;
  if (!evmpi__env_uint(v, EVMPI_LOOP_US_MAX, &us) || us < min_us)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_create: %s=%s is not a number of microseconds "
                       "in %llu..%d", name, v, (unsigned long long)min_us, EVMPI_LOOP_US_MAX);
  *ns = (int64_t)us * 1000;
  return EVMPI_OK;
}

int evmpi__bridge_open(evmpi_bridge_t *b, struct event_base *base, evmpi_pg_t *pg) {
  memset(b, 0, sizeof *b);
  b->efd = -1;
  pthread_mutex_init(&b->mu, NULL);
  b->made = true;
  atomic_init(&b->halted, false);
  int rc = loop_setting("EVMPI_LOOP_P2P_POLL_US", 0, EVMPI_LOOP_P2P_SPIN_NS, &b->p2p_poll_ns);
  if (rc == EVMPI_OK)
    rc = loop_setting("EVMPI_LOOP_HOLD_US", 1, EVMPI_LOOP_MAX_NS, &b->hold_ns);
  if (rc != EVMPI_OK)
    return rc;
  atomic_init(&b->posted, NULL);
  atomic_init(&b->signalled, false);
  atomic_init(&b->closed, false);
  atomic_init(&b->posting, 0);
  b->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (b->efd < 0)
    return evmpi__fail(EVMPI_ERR_NOMEM, "pg_create: eventfd failed: %s", strerror(errno));
  if (!base) {
    b->own_loop = true;
    base = event_base_new();
    if (!base)
      goto fail;
  }
  b->base = base;
  b->ev = event_new(base, b->efd, EV_READ | EV_PERSIST, on_eventfd, pg);
  if (!b->ev || event_add(b->ev, NULL) != 0)
    goto fail;
  if (b->own_loop) {
    evmpi__pg_retain(pg); /* the loop thread's */
    if (pthread_create(&b->loop_thread, NULL, loop_main, pg) != 0) {
      evmpi__pg_release(pg);
      goto fail;
    }
  }
  return EVMPI_OK;
fail:
  if (b->ev)
    event_free(b->ev);
  b->ev = NULL;
  if (b->own_loop && base)
    event_base_free(base);
  b->base = NULL;
  close(b->efd);
  b->efd = -1;
  return evmpi__fail(EVMPI_ERR_NOMEM, "pg_create: cannot attach to the event loop");
}

/* Lock-free, so that a worker or poller finishing works never waits for
 * the loop thread (which polled the old list's mutex while it spun, 74% of
 * the futex calls of a ping-pong) and the eventfd is written outside any
 * lock. `posting` stands in for the lock that made close safe: close sets
 * `closed`, then waits for `posting` to fall to zero before it takes what
 * is left and closes the eventfd, so no poster writes to a closed fd. */
bool evmpi__bridge_post(evmpi_bridge_t *b, evmpi_future_t *f) {
  atomic_fetch_add(&b->posting, 1);
  if (atomic_load(&b->closed)) {
    atomic_fetch_sub(&b->posting, 1);
    return false;
  }
  evmpi_future_t *head = atomic_load_explicit(&b->posted, memory_order_relaxed);
  do
    f->next_delivery = head;
  while (!atomic_compare_exchange_weak_explicit(&b->posted, &head, f, memory_order_seq_cst,
                                                memory_order_relaxed));
  /* One write per batch: the first post after the loop left writes. */
  if (!atomic_exchange(&b->signalled, true))
    signal_eventfd(b->efd);
  atomic_fetch_sub_explicit(&b->posting, 1, memory_order_release);
  return true;
}

bool evmpi__bridge_on_loop_thread(evmpi_bridge_t *b) {
  return b->own_loop && pthread_equal(pthread_self(), b->loop_thread);
}

void evmpi__bridge_close(evmpi_bridge_t *b) {
  if (!b->ev)
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
  deliver_list(b, take_posted(b));
  event_free(b->ev);
  b->ev = NULL;
  close(b->efd);
  b->efd = -1;
  if (b->own_loop) {
    if (self) {
      /* We are in a callback on our own loop thread: stop the loop; the
       * thread frees the base as it leaves and nobody joins it. */
      event_base_loopbreak(b->base);
      pthread_detach(b->loop_thread);
    } else {
      event_base_free(b->base);
    }
  }
}

void evmpi__bridge_halt(evmpi_bridge_t *b, int64_t deadline_ns) {
  atomic_store(&b->halted, true);
  if (!b->ev || !b->own_loop || evmpi__bridge_on_loop_thread(b))
    return;
  pthread_mutex_lock(&b->mu);
  b->stop = true;
  pthread_mutex_unlock(&b->mu);
  signal_eventfd(b->efd);
  /* A callback that never returns must not hold the process's exit. */
  int64_t left = deadline_ns - evmpi__now_ns();
  struct timespec ts = evmpi__timespec_after(CLOCK_REALTIME, left > 0 ? left : 0);
  if (pthread_timedjoin_np(b->loop_thread, NULL, &ts) != 0)
    pthread_detach(b->loop_thread);
}

void evmpi__bridge_fini(evmpi_bridge_t *b) {
  if (!b->made)
    return;
  pthread_mutex_destroy(&b->mu);
  b->made = false;
}
