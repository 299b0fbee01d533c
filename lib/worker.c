/* worker.c: the worker thread. It runs a group's collectives one at a time,
 * in submission order, with blocking MPI calls (the fastest path in Open
 * MPI, whose nonblocking collectives are slower). It sleeps on
 * a condition variable when there is nothing to run.
 *
 * A blocking collective spins inside MPI until every peer has arrived: a
 * rank waiting for a late peer (the next broadcast of an idle service)
 * would burn its core for as long as the peer takes. So before it enters
 * a blocking call the worker passes an arrival gate (gate.c), a
 * nonblocking minimum over the group's internal communicator of how many
 * collectives each rank holds (the one it is about to run and those
 * queued), which it waits for with a back-off that ends in sleeps.
 * The gate's answer m is the same on every rank, and every rank holds the
 * next m collectives: they run without a gate (a queued burst passes one
 * gate per batch, not per operation). The choice between "gate first" and
 * "straight in" must be the same on every rank (a rank in MPI_Allreduce
 * does not match one in MPI_Iallreduce), so it can only follow what all
 * ranks agreed on, never one rank's own idea of being idle or busy.
 *
 * With an operation timeout set, a watchdog thread watches the running
 * collective. When it overruns, the watchdog fails it with
 * EVMPI_ERR_TIMEOUT, fails the queue with EVMPI_ERR_ABORTED and marks the
 * group broken. MPI cannot cancel a collective: the worker stays inside
 * the call until the peers arrive (or the job ends), holding its own
 * references, and leaves as soon as the call returns.
 *
 * Pieces by traffic. A large allreduce goes to MPI in pieces (pieces.c)
 * with a yield between them, so that a loop thread sharing the core gets
 * it for its sends and receives; but every call has its price, and a
 * 16 MiB allreduce was much slower in 1 MiB pieces than in 4 MiB ones
 * (doc/performance.md, "Pieces by traffic"). Each rank tells the gate
 * whether its group is quiet (no send or receive pending, none for
 * QUIET_NS); when every rank is, the collectives on that gate's credit
 * go in pieces of 4 (the largest whole message, evmpi__whole_max_bytes),
 * which still nest in every staged CUDA chunk. Messages beyond
 * QUIET_LONG_PIECES pieces keep EVMPI_PIECE, which is faster there. One
 * rank's traffic keeps EVMPI_PIECE for all: the choice is the gate's, the
 * same on every rank, like the credit. Traffic that starts during a
 * credit waits for the longer pieces until the next gate. */
#include "worker-internal.h"
#include "tls-internal.h"
#include "fifo-internal.h"
#include "clock-internal.h"
#include "cuda_stage-internal.h"
#include "debug-internal.h"
#include "mpi_ext-internal.h"
#include "pg-internal.h"
#include "pieces-internal.h"
#include "poller-internal.h"
#include "status-internal.h"
#include "work-internal.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

/* After a collective, the worker polls the queue this long before it
 * sleeps: a callback that submits the next operation at once (a chain of
 * small collectives) then needs no futex wake-up. Each poll yields the CPU,
 * so ranks that share cores still progress. A queue that is not empty
 * costs no clock read (a clock read is a sizeable part of a queued
 * operation's cost). */
#define WORKER_SPIN_NS 50000

/* How long a group's sends and receives must have been over for its rank
 * to call the group quiet at a gate (see the top of this file). */
#define QUIET_NS ((int64_t)10 * 1000000)
/* The longest message (in pieces) that goes in the longer pieces then:
 * beyond it the data no longer stays in cache from one call to the next,
 * and 4 MiB pieces were slower than 1 MiB ones (doc/performance.md,
 * "Pieces by traffic"). */
#define QUIET_LONG_PIECES 16

static void spin_for_work(evmpi_worker_t *wk) {
  if (atomic_load_explicit(&wk->queued, memory_order_acquire) != 0)
    return;
  int64_t until = evmpi__now_ns() + WORKER_SPIN_NS;
  while (atomic_load_explicit(&wk->queued, memory_order_acquire) == 0 &&
         !atomic_load_explicit(&wk->loop_claim, memory_order_relaxed) &&
         evmpi__now_ns() < until)
    sched_yield();
}

/* Posts the arrival gate before w (see the top of this file) into
 * wk->gate: how many collectives this rank holds, w and those queued
 * behind it. */
static int post_gate(evmpi_worker_t *wk, evmpi_work_t *w) {
  int held = atomic_load_explicit(&wk->queued, memory_order_relaxed);
  int mine = held < INT_MAX - 1 ? held + 1 : INT_MAX;
  bool quiet = evmpi__poller_quiet(&w->pg->poller, QUIET_NS);
  int rc = MPI_SUCCESS;
  /* A collective that can ride the gate does (op_table-internal.h), but
   * not under EVMPI_DEBUG=detail, whose check must come before the data
   * moves. */
  w->gate_carried = false;
  if (w->op->carry && !w->pg->settings.debug)
    rc = w->op->carry(w, &wk->gate, mine, quiet, &w->gate_carried);
  if (rc == MPI_SUCCESS && !w->gate_carried)
    rc = evmpi__gate_post(&wk->gate, w->pg->internal, w->pg->rank, w->pg->size, mine, quiet);
  if (rc != MPI_SUCCESS)
    return evmpi__work_mpi_error(w, "MPI_Isend/MPI_Irecv (the arrival gate)", rc);
  return EVMPI_OK;
}

/* The gate passed: how many collectives, w included, every rank holds,
 * and whether the gate completed w itself (it rode the gate). */
static void gate_passed(evmpi_worker_t *wk, evmpi_work_t *w) {
  int all = evmpi__gate_min(&wk->gate);
  wk->credit = all > 0 ? all : 1;
  wk->credit_quiet = evmpi__gate_quiet(&wk->gate);
  if (w->gate_carried)
    w->gate_carried = evmpi__gate_complete(&wk->gate);
}

/* Waits for the posted gate with its back-off. */
static int finish_gate(evmpi_worker_t *wk, evmpi_work_t *w) {
  int rc = evmpi__gate_wait(&wk->gate, w->pg->settings.coll_idle_poll_us * 1000);
  if (rc != MPI_SUCCESS)
    return evmpi__work_mpi_error(w, "MPI_Testall (the arrival gate)", rc);
  gate_passed(wk, w);
  return EVMPI_OK;
}

static void fail_list(evmpi_work_t *w, const char *why) {
  while (w) {
    evmpi_work_t *next = w->next;
    w->next = NULL;
    evmpi__work_finish(w, EVMPI_ERR_ABORTED, why);
    w = next;
  }
}

/* Takes the queue (under mu); its works are marked done. */
static evmpi_work_t *take_queue(evmpi_worker_t *wk) {
  evmpi_work_t *w = wk->head;
  wk->head = wk->tail = NULL;
  atomic_store(&wk->queued, 0);
  for (evmpi_work_t *it = w; it; it = it->next)
    it->state = EVMPI_WORK_DONE;
  return w;
}

/* CUDA tensors go through the CUDA module, which gives MPI the device
 * pointers or stages them through host memory around run. */
static int run_work(evmpi_work_t *w) {
#ifdef EVMPI_HAVE_CUDA
  if (w->device.type == EVMPI_DEVICE_CUDA)
    return evmpi__cuda_run(w);
#endif
  return w->op->run(w);
}

/* Workers of broken groups that destroy detached while they were inside
 * MPI. The process must not finalise MPI (which unloads Open MPI's
 * components) while one of them is still returning through MPI's code. */
static pthread_mutex_t detached_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t detached_cv; /* CLOCK_MONOTONIC: a clock step must not
                                      lengthen or cut the exit's wait */
static pthread_once_t detached_once = PTHREAD_ONCE_INIT;
static int detached_in_mpi; /* under detached_mu */

static void detached_init(void) {
  evmpi__cond_init_monotonic(&detached_cv);
}

bool evmpi__worker_wait_detached(int timeout_ms) {
  pthread_once(&detached_once, detached_init);
  struct timespec ts = evmpi__timespec_after(CLOCK_MONOTONIC, (int64_t)timeout_ms * 1000000);
  pthread_mutex_lock(&detached_mu);
  while (detached_in_mpi > 0)
    if (pthread_cond_timedwait(&detached_cv, &detached_mu, &ts) == ETIMEDOUT)
      break;
  bool none = detached_in_mpi == 0;
  pthread_mutex_unlock(&detached_mu);
  return none;
}

/* Takes the queue's head (under mu), running from t_started. */
static evmpi_work_t *pop_head_locked(evmpi_worker_t *wk, int64_t t_started) {
  evmpi_work_t *w = wk->head;
  wk->head = w->next;
  if (!wk->head)
    wk->tail = NULL;
  atomic_fetch_sub_explicit(&wk->queued, 1, memory_order_relaxed);
  w->next = NULL;
  w->state = EVMPI_WORK_RUNNING;
  w->t_started = t_started;
  return w;
}

/* Pops the next work to run (under mu) and makes it the running one,
 * started at t_started: its deadline is fixed now, from the timeout in
 * force, so a later evmpi_pg_set_timeout leaves it alone. */
static evmpi_work_t *start_next_locked(evmpi_worker_t *wk, int64_t t_started) {
  evmpi_work_t *w = pop_head_locked(wk, t_started);
  wk->running = w;
  wk->running_seq = w->seq;
  wk->running_timeout_ms = wk->timeout_ms;
  wk->running_deadline =
      wk->timeout_ms > 0 ? t_started + (int64_t)wk->timeout_ms * 1000000 : 0;
  atomic_store_explicit(&wk->in_mpi, true, memory_order_relaxed);
  evmpi__work_retain(w); /* ours while in MPI, whoever completes it */
  if (wk->watchdog_started)
    pthread_cond_signal(&wk->wd_cv);
  return w;
}

/* Breaks the group (under mu; mu is released and taken again): the
 * running collective fails with EVMPI_ERR_TIMEOUT and message what, the
 * queue with EVMPI_ERR_ABORTED, and new work is refused from now on. The
 * worker stays in MPI until the call returns, then leaves. */
static void break_group_locked(evmpi_worker_t *wk, const char *why, const char *what) {
  wk->broken = strdup(why);
  if (!wk->broken)
    wk->broken = strdup("out of memory");
  atomic_store(&wk->is_broken, true);
  evmpi_work_t *w = wk->running;
  if (w)
    evmpi__work_retain(w);
  /* The allreduces fused with it are in the same call (the first of them
   * is w itself). */
  evmpi_work_t *fused[EVMPI_FUSE_MAX_WORKS];
  size_t nfused = w ? wk->fused_running : 0;
  for (size_t i = 1; i < nfused; i++) {
    fused[i] = wk->fuse.works[i];
    evmpi__work_retain(fused[i]);
  }
  evmpi_work_t *queued = take_queue(wk);
  pthread_cond_broadcast(&wk->cv);
  pthread_cond_broadcast(&wk->exit_cv);
  pthread_mutex_unlock(&wk->mu);
  if (w) {
    evmpi__work_finish(w, EVMPI_ERR_TIMEOUT, what);
    evmpi_work_release(w);
  }
  for (size_t i = 1; i < nfused; i++) {
    evmpi__work_finish(fused[i], EVMPI_ERR_TIMEOUT, what);
    evmpi_work_release(fused[i]);
  }
  char msg[320];
  snprintf(msg, sizeof msg, "the group is broken: %s", why);
  fail_list(queued, msg);
  pthread_mutex_lock(&wk->mu);
}

/* The bytes of w's tensors in all; -1 when one has no element count. */
static int64_t work_bytes(const evmpi_work_t *w) {
  int64_t bytes = 0;
  for (size_t i = 0; i < w->ntensors; i++) {
    int64_t n = evmpi_tensor_numel(&w->tensors[i]);
    if (n < 0)
      return -1;
    bytes += n * (int64_t)evmpi_dtype_size(w->tensors[i].dtype);
  }
  return bytes;
}

/* The collective itself, once its gate is passed (or its credit used),
 * on whichever thread runs it; status is the gate's. One of at least a
 * piece (EVMPI_PIECE) runs with MPI yielding the core while it idles
 * (evmpi__mpi_yield_begin): the loop thread that shares it gets it then,
 * not a time slice later. Small ones do not pay a system call per idle
 * pass. */
static int run_gated(evmpi_worker_t *wk, evmpi_work_t *w, int status, bool debug) {
  bool quiet = wk->credit > 0 && wk->credit_quiet;
  if (wk->credit > 0)
    wk->credit--;
  /* Pieces by traffic: every rank holds this collective on the same
   * gate's credit, so every rank cuts it alike. */
  size_t longer = evmpi__whole_max_bytes(w->pg);
  if (quiet && w->piece_bytes < longer &&
      work_bytes(w) <= (int64_t)(QUIET_LONG_PIECES * w->pg->piece_bytes))
    w->piece_bytes = longer;
  if (status == EVMPI_OK && debug)
    status = evmpi__debug_check(w);
  if (status == EVMPI_OK) {
    bool yield = w->pg->size > 1 && work_bytes(w) >= (int64_t)w->pg->piece_bytes;
    if (yield)
      evmpi__mpi_yield_begin();
    status = run_work(w);
    if (yield)
      evmpi__mpi_yield_end();
  }
  return status;
}

/* The running collective w is over (under mu). */
static void retire_locked(evmpi_worker_t *wk, evmpi_work_t *w) {
  wk->running = NULL;
  wk->running_seq = 0;
  wk->running_deadline = 0;
  w->state = EVMPI_WORK_DONE;
}

/* Whether the worker may take the queue's head now (under mu): not while
 * the loop thread runs a collective, nor a head the loop thread has
 * claimed, unless the group is closing (destroy runs what is queued). */
static bool worker_may_start_locked(evmpi_worker_t *wk) {
  if (wk->loop_running || !wk->head)
    return false;
  return wk->closing || !atomic_load_explicit(&wk->loop_claim, memory_order_relaxed);
}

/* Fuses the allreduces queued behind w, when w can lead a set (fuse.c),
 * from those every rank holds: w's credit (see the top of this file), so
 * that every rank fuses the same ones. Under mu, they leave the queue and
 * run with w, started now (w keeps its own start, its gate's wait
 * included). Returns how many joined w. */
static size_t fuse_followers(evmpi_worker_t *wk, evmpi_work_t *w) {
  int64_t limit = w->pg->settings.coll_fuse_bytes;
  if (wk->credit < 2 || !evmpi__fuse_lead(&wk->fuse, w, limit)) /* 0: none can lead */
    return 0;
  int64_t t_started = evmpi__now_ns();
  size_t n = 1;
  pthread_mutex_lock(&wk->mu);
  while ((int64_t)n < wk->credit && wk->head && !wk->broken &&
         evmpi__fuse_add(&wk->fuse, wk->head, limit)) {
    evmpi__work_retain(pop_head_locked(wk, t_started)); /* ours while in MPI, as the
                                                           running one */
    n++;
  }
  wk->fused_running = n > 1 ? n : 0;
  pthread_mutex_unlock(&wk->mu);
  return n - 1;
}

/* The fused set's followers, once the set is unpacked: finished in
 * order, after the leader. */
static void finish_fused(evmpi_worker_t *wk, int64_t t_done) {
  evmpi_fuse_t *f = &wk->fuse;
  for (size_t i = 1; i < f->n; i++) {
    evmpi__work_finish_at(f->works[i], f->status[i], NULL, t_done); /* no-op if failed */
    f->works[i]->state = EVMPI_WORK_DONE;
    evmpi_work_release(f->works[i]);
  }
}

/* Runs the group's collectives. After each, one pass under mu both retires
 * it and, when the queue holds more, starts the next: a queued operation
 * costs one lock round trip here, not two. The next one's start time is
 * the previous one's finish, or its submission if that came later (the
 * clock is read once per operation). */
static void *worker_main(void *arg) {
  evmpi_pg_t *pg = arg;
  evmpi_worker_t *wk = &pg->worker;
  bool debug = evmpi__debug_detail();
#ifdef __linux__
  /* The gate's sleeps are short at first: the default timer slack (50 us)
   * would stretch them. */
  prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
#endif
  evmpi_work_t *w = NULL;
  for (;;) {
    bool gate_posted = false;
    if (!w) {
      pthread_mutex_lock(&wk->mu);
      /* A collective on the loop thread keeps the worker here, even in a
       * broken group: it uses the group's communicators, which must not go
       * while it runs. */
      while (!wk->handoff && !worker_may_start_locked(wk) &&
             (wk->loop_running || (!wk->broken && !(wk->closing && !wk->head)))) {
        wk->waiting = true;
        pthread_cond_wait(&wk->cv, &wk->mu);
        wk->waiting = false;
      }
      if (wk->handoff) {
        /* The loop thread posted its gate and ran out of time, or passed
         * it and left a burst to fuse to us. */
        w = wk->handoff;
        wk->handoff = NULL;
        gate_posted = !wk->handoff_passed;
        wk->handoff_passed = false;
      } else if (wk->broken || !wk->head) {
        pthread_mutex_unlock(&wk->mu);
        break;
      } else {
        atomic_store_explicit(&wk->loop_claim, false, memory_order_relaxed);
        w = start_next_locked(wk, evmpi__now_ns());
      }
      pthread_mutex_unlock(&wk->mu);
    }

    int status = EVMPI_OK;
    if (gate_posted) {
      status = finish_gate(wk, w);
    } else if (wk->credit == 0 && pg->size > 1 && pg->settings.arrival_gate) {
      status = post_gate(wk, w);
      if (status == EVMPI_OK)
        status = finish_gate(wk, w);
    }
    size_t followers = 0;
    if (status == EVMPI_OK && !debug)
      followers = fuse_followers(wk, w);
    if (followers > 0) {
      wk->credit -= (int64_t)followers + 1;
      evmpi__fuse_reduce(&wk->fuse); /* status: the set's, once unpacked (below) */
    } else {
      status = run_gated(wk, w, status, debug);
    }
    int64_t t_done = evmpi__now_ns();

    pthread_mutex_lock(&wk->mu);
    bool broke = wk->broken != NULL; /* during the call: the set was failed */
    wk->fused_running = 0;
    retire_locked(wk, w);
    evmpi_work_t *next = NULL;
    if (wk->head && !wk->broken) {
      /* queued after t_done (stamped before it was queued): starts now */
      atomic_store_explicit(&wk->loop_claim, false, memory_order_relaxed);
      next = start_next_locked(wk, wk->head->t_queued > t_done ? wk->head->t_queued : t_done);
    } else {
      atomic_store_explicit(&wk->in_mpi, false, memory_order_relaxed);
      if (wk->watchdog_started)
        pthread_cond_signal(&wk->wd_cv);
      /* until w's completion is posted (see unposted): the last to be
       * posted, a fused set's last follower */
      wk->unposted = followers > 0 ? wk->fuse.works[wk->fuse.n - 1]->seq : w->seq;
    }
    pthread_mutex_unlock(&wk->mu);
    if (followers > 0) {
      /* Unless the group broke during the call (the set failed then, and
       * the tensors are the application's again). */
      if (!broke)
        evmpi__fuse_unpack(&wk->fuse);
      status = wk->fuse.status[0];
    }
    evmpi__work_finish_at(w, status, NULL, t_done); /* no-op if the watchdog did */
    if (followers > 0)
      finish_fused(wk, t_done);
    if (!next) {
      pthread_mutex_lock(&wk->mu);
      wk->unposted = 0;
      pthread_mutex_unlock(&wk->mu);
    }
    evmpi_work_release(w);
    w = next;
    if (!w)
      spin_for_work(wk);
  }
  pthread_mutex_lock(&wk->mu);
  bool detached = wk->detached;
  wk->exited = true;
  pthread_cond_broadcast(&wk->exit_cv);
  pthread_mutex_unlock(&wk->mu);
  evmpi__pg_release(pg); /* the thread's own reference */
  if (detached) {
    pthread_once(&detached_once, detached_init);
    pthread_mutex_lock(&detached_mu);
    detached_in_mpi--;
    pthread_cond_broadcast(&detached_cv);
    pthread_mutex_unlock(&detached_mu);
  }
  return NULL;
}

/* ---- small collectives on the loop thread ---------------------------------
 *
 * A chain of small collectives, each submitted by the previous one's
 * callback, costs two hand-offs per link on the worker: loop thread to
 * worker, and the completion back. So a callback's collective that finds
 * the worker idle is claimed for the loop thread instead (no wake-up of the
 * worker), which runs it in its dispatch, after the callbacks: it posts
 * the arrival gate and tests it for a short while. Once every rank has
 * reached the gate, every rank is about to make the same blocking call (on
 * its loop thread or its worker, never waiting for anything else first),
 * so the loop thread makes it too, and is held only for the call itself.
 * If the gate is not passed in time, the collective goes to the worker
 * with its gate posted, as if the worker had posted it. Every rank makes
 * the same MPI calls either way, so each may choose alone. The loop thread
 * never runs a collective without a gate of its own: one that runs on a
 * gate's credit could wait, blocking, for a peer whose collective is
 * still in its queue behind a busy loop. A claim that the loop thread
 * does not take before it leaves its dispatch, or that someone waits for,
 * goes to the worker (evmpi__worker_kick). */

/* The most a collective's tensors may hold to run on the loop thread: a
 * blocking collective of this size takes some microseconds, which the loop
 * may be held for. */
#define LOOP_COLLECTIVE_MAX_BYTES ((int64_t)64 << 10)
/* The longest the loop thread tests a gate it posted: in a chain every
 * rank reaches the next collective at about the same time, and a peer
 * that takes longer is the worker's to wait for, with its back-off. */
#define LOOP_GATE_NS 30000
#define LOOP_TIGHT_NS 5000

static EVMPI__HOT_TLS evmpi_worker_t *dispatching_here;

evmpi_worker_t *evmpi__worker_dispatch_begin(evmpi_worker_t *wk) {
  evmpi_worker_t *prev = dispatching_here;
  dispatching_here = wk;
  return prev;
}

void evmpi__worker_dispatch_end(evmpi_worker_t *wk, evmpi_worker_t *prev) {
  dispatching_here = prev;
  evmpi__worker_kick(wk);
}

/* Whether w may run on the loop thread: a small collective on host memory,
 * in a group whose collectives pass the arrival gate (or of one rank).
 * Asked only where a claim is possible, not on every submission. */
static bool loop_eligible(const evmpi_work_t *w) {
  const evmpi_pg_t *pg = w->pg;
  if (!pg->settings.loop_collectives || w->kind != EVMPI_WORK_COLLECTIVE)
    return false;
  if (pg->size > 1 && !pg->settings.arrival_gate)
    return false;
  if (w->device.type != EVMPI_DEVICE_CPU)
    return false;
  int64_t bytes = work_bytes(w);
  return bytes >= 0 && bytes <= LOOP_COLLECTIVE_MAX_BYTES;
}

/* Gives a claimed head to the worker (under mu). */
static void unclaim_locked(evmpi_worker_t *wk) {
  if (!atomic_load_explicit(&wk->loop_claim, memory_order_relaxed))
    return;
  atomic_store_explicit(&wk->loop_claim, false, memory_order_relaxed);
  if (wk->waiting && wk->head)
    pthread_cond_signal(&wk->cv);
}

void evmpi__worker_kick(evmpi_worker_t *wk) {
  if (!atomic_load_explicit(&wk->loop_claim, memory_order_relaxed))
    return;
  pthread_mutex_lock(&wk->mu);
  unclaim_locked(wk);
  pthread_mutex_unlock(&wk->mu);
}

/* Tests the gate the loop thread posted, back to back for LOOP_TIGHT_NS,
 * then with a yield between tests, until until_ns. */
static int test_gate_until(evmpi_gate_t *g, int64_t until_ns, bool *passed) {
  int64_t t0 = evmpi__now_ns();
  for (;;) {
    int rc = evmpi__gate_test(g, passed);
    if (rc != MPI_SUCCESS || *passed)
      return rc;
    int64_t now = evmpi__now_ns();
    if (now >= until_ns)
      return MPI_SUCCESS;
    if (now - t0 >= LOOP_TIGHT_NS)
      sched_yield();
  }
}

bool evmpi__worker_run_here(evmpi_worker_t *wk, evmpi_pg_t *pg, int64_t gate_until_ns) {
  if (!atomic_load_explicit(&wk->loop_claim, memory_order_relaxed))
    return false;
  pthread_mutex_lock(&wk->mu);
  evmpi_work_t *w = wk->head;
  if (!atomic_load_explicit(&wk->loop_claim, memory_order_relaxed) || wk->running ||
      wk->closing || wk->broken || wk->handoff || !w || wk->credit > 0 || !loop_eligible(w)) {
    unclaim_locked(wk);
    pthread_mutex_unlock(&wk->mu);
    return false;
  }
  if (wk->unposted) {
    /* The worker has yet to post the completion of the collective before
     * this one: ours would come first. The claim stays, for the next
     * poll of the dispatch (or the worker, once the dispatch ends). Once
     * this thread has delivered that very completion, the worker is only
     * slow to say so (a callback of it submitted ours, say): it was posted,
     * and the flag goes now. Equal, not at least: collectives that threads
     * submit at once may take their numbers in one order and the queue in
     * the other. */
    if (wk->unposted != pg->bridge.coll_delivered) {
      pthread_mutex_unlock(&wk->mu);
      return false;
    }
    wk->unposted = 0;
  }
  atomic_store_explicit(&wk->loop_claim, false, memory_order_relaxed);
  w = start_next_locked(wk, evmpi__now_ns());
  wk->loop_running = true;
  pthread_mutex_unlock(&wk->mu);

  int status = EVMPI_OK;
  if (pg->size > 1) {
    int64_t cap = evmpi__now_ns() + LOOP_GATE_NS;
    if (gate_until_ns > cap)
      gate_until_ns = cap;
    status = post_gate(wk, w);
    bool done = false;
    if (status == EVMPI_OK) {
      int rc = test_gate_until(&wk->gate, gate_until_ns, &done);
      if (rc != MPI_SUCCESS)
        status = evmpi__work_mpi_error(w, "MPI_Testall (the arrival gate)", rc);
    }
    if (status == EVMPI_OK && !done) {
      /* A peer is late: the worker waits for it, with its back-off. */
      pthread_mutex_lock(&wk->mu);
      wk->loop_running = false;
      wk->handoff = w;
      pthread_cond_signal(&wk->cv);
      pthread_mutex_unlock(&wk->mu);
      return false;
    }
    if (status == EVMPI_OK)
      gate_passed(wk, w);
    if (status == EVMPI_OK && wk->credit >= 2 && !evmpi__debug_detail() &&
        evmpi__fuse_can_lead(w, pg->settings.coll_fuse_bytes)) {
      /* Every rank holds a burst that w leads: the worker fuses it, as
       * the other ranks' workers do (the same calls on every rank),
       * without holding the loop for it. */
      pthread_mutex_lock(&wk->mu);
      wk->loop_running = false;
      wk->handoff = w;
      wk->handoff_passed = true;
      pthread_cond_signal(&wk->cv);
      pthread_mutex_unlock(&wk->mu);
      return false;
    }
  }
  w->ran_on_loop = true;
  status = run_gated(wk, w, status, evmpi__debug_detail());
  int64_t t_done = evmpi__now_ns();

  pthread_mutex_lock(&wk->mu);
  retire_locked(wk, w);
  atomic_store_explicit(&wk->in_mpi, false, memory_order_relaxed);
  if (wk->watchdog_started)
    pthread_cond_signal(&wk->wd_cv);
  pthread_mutex_unlock(&wk->mu);
  /* Posted before the worker may take the next one (loop_running keeps
   * it away): callbacks run in submission order, and a worker that ran
   * the next collective while this thread was preempted here posted that
   * one's completion first. */
  evmpi__work_finish_at(w, status, NULL, t_done); /* no-op if the watchdog did */
  pthread_mutex_lock(&wk->mu);
  wk->loop_running = false;
  if (wk->head && !wk->closing && !wk->broken && dispatching_here == wk &&
      wk->credit == 0 && loop_eligible(wk->head)) {
    /* queued meanwhile: the loop thread takes it next, or kicks it */
    atomic_store_explicit(&wk->loop_claim, true, memory_order_relaxed);
  } else if (wk->waiting && (wk->head || wk->closing || wk->broken)) {
    pthread_cond_signal(&wk->cv);
  }
  pthread_mutex_unlock(&wk->mu);
  evmpi_work_release(w);
  return true;
}

/* Watches the running collective against the deadline it started with.
 * It runs until the worker stops (not merely until destroy begins), so
 * that the collectives destroy waits for are bounded too. */
static void *watchdog_main(void *arg) {
  evmpi_pg_t *pg = arg;
  evmpi_worker_t *wk = &pg->worker;
  pthread_mutex_lock(&wk->mu);
  while (!wk->wd_stop && !wk->broken) {
    uint64_t seq = wk->running_seq;
    int64_t deadline = wk->running_deadline;
    if (!seq || !deadline) {
      pthread_cond_wait(&wk->wd_cv, &wk->mu);
      continue;
    }
    struct timespec ts = {deadline / 1000000000, deadline % 1000000000};
    int rc = pthread_cond_timedwait(&wk->wd_cv, &wk->mu, &ts);
    if (rc != ETIMEDOUT || wk->wd_stop || wk->broken || wk->running_seq != seq ||
        evmpi__now_ns() < deadline)
      continue;
    /* The collective numbered seq overran: fail it, break the group. */
    char why[256], what[320];
    snprintf(why, sizeof why, "%s (#%llu) timed out after %d ms", wk->running->op->opname,
             (unsigned long long)seq, wk->running_timeout_ms);
    snprintf(what, sizeof what, "%s; the group is broken", why);
    break_group_locked(wk, why, what);
  }
  pthread_mutex_unlock(&wk->mu);
  return NULL;
}

int evmpi__worker_start(evmpi_worker_t *wk, evmpi_pg_t *pg) {
  memset(wk, 0, sizeof *wk);
  atomic_init(&wk->queued, 0);
  atomic_init(&wk->in_mpi, false);
  atomic_init(&wk->is_broken, false);
  pthread_mutex_init(&wk->mu, NULL);
  pthread_cond_init(&wk->cv, NULL);
  evmpi__cond_init_monotonic(&wk->wd_cv);
  evmpi__cond_init_monotonic(&wk->exit_cv);
  wk->made = true;
  evmpi__pg_retain(pg);
  if (pthread_create(&wk->thread, NULL, worker_main, pg) != 0) {
    evmpi__pg_release(pg);
    return evmpi__fail(EVMPI_ERR_NOMEM, "pg_create: cannot start the worker thread");
  }
  wk->started = true;
  return EVMPI_OK;
}

int evmpi__worker_set_timeout(evmpi_worker_t *wk, evmpi_pg_t *pg, int timeout_ms) {
  pthread_mutex_lock(&wk->mu);
  if (wk->closing) {
    /* stop may have joined the watchdog already: none may start now. */
    pthread_mutex_unlock(&wk->mu);
    return evmpi__fail(EVMPI_ERR_ABORTED, "pg_set_timeout: the group is being destroyed");
  }
  wk->timeout_ms = timeout_ms;
  int rc = EVMPI_OK;
  if (timeout_ms > 0 && !wk->watchdog_started) {
    if (pthread_create(&wk->watchdog, NULL, watchdog_main, pg) == 0)
      wk->watchdog_started = true;
    else
      rc = evmpi__fail(EVMPI_ERR_NOMEM, "pg_set_timeout: cannot start the watchdog thread");
  }
  pthread_cond_signal(&wk->wd_cv);
  pthread_mutex_unlock(&wk->mu);
  return rc;
}

int evmpi__worker_timeout(evmpi_worker_t *wk) {
  pthread_mutex_lock(&wk->mu);
  int ms = wk->timeout_ms;
  pthread_mutex_unlock(&wk->mu);
  return ms;
}

bool evmpi__worker_active(evmpi_worker_t *wk) {
  return atomic_load_explicit(&wk->queued, memory_order_relaxed) > 0 ||
         atomic_load_explicit(&wk->in_mpi, memory_order_relaxed);
}

bool evmpi__worker_broken(evmpi_worker_t *wk, char *buf, size_t len) {
  if (!atomic_load(&wk->is_broken))
    return false; /* every submission asks: no lock on that path */
  pthread_mutex_lock(&wk->mu);
  bool broken = wk->broken != NULL;
  if (broken)
    snprintf(buf, len, "%s", wk->broken);
  pthread_mutex_unlock(&wk->mu);
  return broken;
}

int evmpi__worker_submit(evmpi_worker_t *wk, evmpi_work_t *w) {
  int placed = evmpi__work_place(w);
  if (placed != EVMPI_OK)
    return placed;
  w->ran_on_loop = false;
  pthread_mutex_lock(&wk->mu);
  if (wk->closing || wk->broken) {
    int rc = wk->broken
                 ? evmpi__fail(EVMPI_ERR_ABORTED, "%s: the group is broken: %s", w->op->opname,
                               wk->broken)
                 : evmpi__fail(EVMPI_ERR_ABORTED, "%s: the group is being destroyed", w->op->opname);
    pthread_mutex_unlock(&wk->mu);
    return rc;
  }
  /* A callback's collective that finds the worker idle is the loop
   * thread's to run (see "small collectives on the loop thread"). */
  bool claim = dispatching_here == wk && !wk->running && !wk->head && !wk->handoff &&
               wk->credit == 0 && loop_eligible(w);
  w->state = EVMPI_WORK_QUEUED;
  EVMPI__FIFO_PUSH(wk->head, wk->tail, w);
  atomic_fetch_add_explicit(&wk->queued, 1, memory_order_release);
  atomic_fetch_add_explicit(&w->pg->inflight, 1, memory_order_relaxed);
  if (claim)
    atomic_store_explicit(&wk->loop_claim, true, memory_order_relaxed);
  else if (wk->waiting && !atomic_load_explicit(&wk->loop_claim, memory_order_relaxed))
    pthread_cond_signal(&wk->cv); /* a spinning worker sees the count; a sleeping one
                                     needs this (a claimed queue is the loop's to pass on) */
  pthread_mutex_unlock(&wk->mu);
  return EVMPI_OK;
}

bool evmpi__worker_cancel(evmpi_worker_t *wk, evmpi_work_t *w) {
  bool removed = false;
  pthread_mutex_lock(&wk->mu);
  if (w->state == EVMPI_WORK_QUEUED) {
    evmpi_work_t *prev = NULL;
    for (evmpi_work_t *it = wk->head; it; prev = it, it = it->next) {
      if (it != w)
        continue;
      if (prev)
        prev->next = w->next;
      else
        wk->head = w->next;
      if (wk->tail == w)
        wk->tail = prev;
      w->next = NULL;
      w->state = EVMPI_WORK_DONE;
      atomic_fetch_sub_explicit(&wk->queued, 1, memory_order_relaxed);
      removed = true;
      break;
    }
  }
  pthread_mutex_unlock(&wk->mu);
  if (removed) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s: aborted before it started (#%llu)", w->op->opname,
             (unsigned long long)w->seq);
    evmpi__work_finish(w, EVMPI_ERR_ABORTED, msg);
  }
  return removed;
}

void evmpi__worker_fail_queued(evmpi_worker_t *wk, const char *why) {
  pthread_mutex_lock(&wk->mu);
  wk->closing = true;
  evmpi_work_t *w = take_queue(wk);
  pthread_mutex_unlock(&wk->mu);
  fail_list(w, why);
}

bool evmpi__worker_stop(evmpi_worker_t *wk, int64_t deadline_ns) {
  if (!wk->started || wk->stopped)
    return wk->started ? wk->clean : true;
  pthread_mutex_lock(&wk->mu);
  wk->closing = true;
  pthread_cond_broadcast(&wk->cv);
  while (!wk->exited && !wk->broken) {
    if (!deadline_ns) {
      pthread_cond_wait(&wk->exit_cv, &wk->mu);
      continue;
    }
    struct timespec ts = {deadline_ns / 1000000000, deadline_ns % 1000000000};
    if (pthread_cond_timedwait(&wk->exit_cv, &wk->mu, &ts) == ETIMEDOUT && !wk->exited &&
        !wk->broken && !wk->running) {
      /* Out of time between two collectives: nothing is inside MPI, so the
       * queue fails and the thread, which leaves at once, is joined. */
      evmpi_work_t *queued = take_queue(wk);
      pthread_cond_broadcast(&wk->cv);
      pthread_mutex_unlock(&wk->mu);
      fail_list(queued, "destroy's time ran out before it started");
      pthread_mutex_lock(&wk->mu);
      deadline_ns = 0;
    } else if (!wk->exited && !wk->broken && wk->running &&
               evmpi__now_ns() >= deadline_ns) {
      char why[256], what[320];
      if (wk->running)
        snprintf(why, sizeof why, "%s (#%llu) was still running when destroy's time ran out",
                 wk->running->op->opname, (unsigned long long)wk->running_seq);
      else
        snprintf(why, sizeof why, "destroy's time ran out");
      snprintf(what, sizeof what, "%s; the group is broken", why);
      break_group_locked(wk, why, what);
    }
  }
  bool broken = !wk->exited;
  if (broken) {
    /* Counted under mu, so the thread's exit sees it (and uncounts). */
    wk->detached = true;
    pthread_mutex_lock(&detached_mu);
    detached_in_mpi++;
    pthread_mutex_unlock(&detached_mu);
  }
  bool watchdog = wk->watchdog_started;
  wk->wd_stop = true;
  pthread_cond_broadcast(&wk->wd_cv);
  pthread_mutex_unlock(&wk->mu);
  if (watchdog)
    pthread_join(wk->watchdog, NULL);
  if (broken)
    pthread_detach(wk->thread); /* may be stuck in MPI: it leaves by itself */
  else
    pthread_join(wk->thread, NULL);
  wk->stopped = true;
  wk->clean = !broken;
  return wk->clean;
}

void evmpi__worker_fini(evmpi_worker_t *wk) {
  if (!wk->made)
    return;
  pthread_mutex_destroy(&wk->mu);
  pthread_cond_destroy(&wk->cv);
  pthread_cond_destroy(&wk->wd_cv);
  pthread_cond_destroy(&wk->exit_cv);
  free(wk->broken);
  evmpi__fuse_fini(&wk->fuse);
  wk->made = false;
}
