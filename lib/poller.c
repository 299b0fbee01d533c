/* poller.c: the poller thread. Sends and receives are issued at once with
 * MPI_Isend/MPI_Irecv by the submitting thread; the poller tests them all
 * with MPI_Testsome, so that their completion does not wait for the
 * collective the worker may be running (past a hundred or so pending, a
 * window of them between tests of all: test_pending_locked). It spins
 * briefly after activity, then sleeps in proportion to how long nothing
 * has happened (4 ranks share 2 cores in the tests), and sleeps on a
 * condition variable when nothing is pending.
 *
 * Works finish in the order MPI matched them: the pending arrays keep the
 * order of issue, and a request that completes while an older one of the
 * same kind, peer and tag is still pending is held until that one
 * finishes (a small message can complete before a large one that matched
 * first).
 *
 * Deadlines: a send or receive may carry one (the group's p2p timeout at
 * issue, or evmpi_work_set_deadline). The poller keeps the earliest, never
 * sleeps past it, and when it passes fails the work with
 * EVMPI_ERR_TIMEOUT: a receive is cancelled (or, when it matched a message
 * that has not finished, abandoned to MPI), a send abandoned (MPI may still
 * deliver it), and the group is broken, since a peer that missed a
 * deadline may be gone (evmpi__poller_broken is the hook). */
#include "poller-internal.h"
#include "fifo-internal.h"
#include "clock-internal.h"
#include "mpi_ext-internal.h"
#include "pg-internal.h"
#include "status-internal.h"
#include "work-internal.h"
#include "cuda_p2p-internal.h"

#include <errno.h>
#include <stdint.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* After a poll that finished nothing, the poller yields while requests
 * were active within SPIN_NS, and then sleeps an eighth of the time since
 * they were (a request finished, on the poller or the loop thread, or was
 * submitted), from MIN_SLEEP_NS up to MAX_SLEEP_NS (the group's
 * EVMPI_P2P_IDLE_POLL_MS). A transfer that takes
 * D is so seen at most about D/8 after it ends; sleeps that doubled per
 * empty poll grew long within a single large transfer and slowed large
 * ping-pongs. A receive left posted for long costs a test every
 * MAX_SLEEP_NS (a timer, a context switch, MPI_Testsome with its progress
 * pass), which keeps it near half a percent of a core, and a message that
 * ends a quiet spell of Q is still seen within Q/8. The thread's timer
 * slack is 1 us (Linux): the default 50 us stretched every short sleep by
 * that much. doc/performance.md has the figures.
 *
 * While a large message (LARGE_BYTES or more: past the eager limits, a
 * rendezvous that needs both sides' progress) is pending, the poller
 * yields instead of sleeping for up to SPIN_NS plus one nanosecond per
 * pending large byte (a transfer at 1 GB/s; LARGE_SPIN_MAX_NS at most)
 * since the last activity, on an MPI that needs it
 * (evmpi__mpi_rendezvous_needs_polling): MPICH moves such a message only
 * inside MPI calls, a pipeline step per call, so sleeping between tests
 * stretched a 16 MiB transfer almost tenfold. On Open MPI the yielding
 * made large ping-pongs slower on a loaded machine (its rendezvous is a
 * single copy), so it is off there. A large receive that nobody sends to
 * costs that much yielding once, then backs off as any other. */
enum {
  SPIN_NS = 50000,
  MIN_SLEEP_NS = 1000,
  /* MAX_SLEEP_NS: the group's EVMPI_P2P_IDLE_POLL_MS (p->max_sleep_ns) */
  LARGE_BYTES = 65536,
  LARGE_SPIN_MAX_NS = 100000000,
  /* The most requests the loop thread tests at once (evmpi__poller_test):
   * all of them up to LOOP_TEST_MAX, else the oldest, or when none of
   * those is done the newest and a walk through the rest
   * (test_window_locked). 32, the oldest only, left
   * a window of 64 sends and their acknowledgement's receive to both
   * threads, which took turns on the core and for the lock, and a stream
   * behind receives left posted to the poller alone. */
  LOOP_TEST_MAX = 128,
  LOOP_OLDEST = 32,
  LOOP_NEWEST = 64,
  LOOP_MIDDLE = LOOP_TEST_MAX - LOOP_OLDEST - LOOP_NEWEST,
  /* Past LOOP_TEST_MAX pending requests the poller, too, tests the window
   * (test_pending_locked), and all of them at most once per FULL_SPACING
   * times what its last test of all of them took. */
  FULL_SPACING = 32,
  /* How often evmpi__poller_quiet tries the lock before it answers "not
   * quiet" (the safe answer: pieces of EVMPI_PIECE). */
  QUIET_TRIES = 8,
};

/* A work's message size in bytes. */
static int64_t work_bytes(const evmpi_work_t *w) {
  return w->numel * (int64_t)evmpi_dtype_size(w->tensors[0].dtype);
}

typedef struct {
  int *idx;
  MPI_Status *st;
  size_t cap;
} scratch_t;

/* Room for need entries in two parallel arrays of *cap entries (element
 * sizes asz and bsz), doubled as they fill: the poller's requests and
 * works, and its MPI_Testsome scratch. On failure nothing is lost: an
 * array that grew keeps its old entries, *cap stays what both hold. */
static int grow_pair(void **a, size_t asz, void **b, size_t bsz, size_t *cap, size_t need) {
  if (need <= *cap)
    return 0;
  size_t n = *cap ? *cap * 2 : 16;
  while (n < need)
    n *= 2;
  void *na = realloc(*a, n * asz);
  if (!na)
    return -1;
  *a = na;
  void *nb = realloc(*b, n * bsz);
  if (!nb)
    return -1;
  *b = nb;
  *cap = n;
  return 0;
}

static int grow_arrays(evmpi_poller_t *p, size_t need) {
  if (need <= p->cap)
    return 0;
  /* The channels first, to the size the pair will have: the pair's cap
   * then never exceeds the channels' room. */
  size_t n = p->cap ? p->cap * 2 : 16;
  while (n < need)
    n *= 2;
  uint64_t *chan = realloc(p->chan, n * sizeof *chan);
  if (!chan)
    return -1;
  p->chan = chan;
  void *reqs = p->reqs, *works = p->works;
  int rc = grow_pair(&reqs, sizeof *p->reqs, &works, sizeof *p->works, &p->cap, n);
  p->reqs = reqs;
  p->works = works;
  return rc;
}

static int grow_scratch(scratch_t *s, size_t need) {
  void *idx = s->idx, *st = s->st;
  int rc = grow_pair(&idx, sizeof *s->idx, &st, sizeof *s->st, &s->cap, need);
  s->idx = idx;
  s->st = st;
  return rc;
}

/* "recv (#12) from rank 1, tag 7": the operation, its sequence number, the
 * peer and the tag, as every p2p timeout message names them. */
static void describe(char *buf, size_t len, const evmpi_work_t *w) {
  if (w->kind == EVMPI_WORK_SEND)
    snprintf(buf, len, "%s (#%llu) to rank %d, tag %d", w->op->opname, (unsigned long long)w->seq,
             w->args.p2p.peer, w->args.p2p.tag);
  else if (w->args.p2p.peer == MPI_ANY_SOURCE)
    snprintf(buf, len, "%s (#%llu) from any rank, tag %d", w->op->opname,
             (unsigned long long)w->seq, w->args.p2p.tag);
  else
    snprintf(buf, len, "%s (#%llu) from rank %d, tag %d", w->op->opname, (unsigned long long)w->seq,
             w->args.p2p.peer, w->args.p2p.tag);
}

/* The outcome of a finished request: status and message for its work. */
static int request_outcome(evmpi_work_t *w, int rc, const MPI_Status *st) {
  if (rc != MPI_SUCCESS)
    return evmpi__work_mpi_result(w, rc); /* the row's MPI_Isend or MPI_Irecv */
  int cancelled = 0;
  MPI_Test_cancelled(st, &cancelled);
  if (cancelled) {
    free(w->error_text);
    if (w->kind == EVMPI_WORK_RECV)
      w->error_text = evmpi__asprintf("%s: cancelled before a message matched (#%llu)",
                                      w->op->opname, (unsigned long long)w->seq);
    else {
      char what[128];
      describe(what, sizeof what, w);
      w->error_text = evmpi__asprintf("%s: cancelled by destroy: no receive of this group can "
                                      "match it any more", what);
    }
    return EVMPI_ERR_ABORTED;
  }
  if (w->kind == EVMPI_WORK_RECV) {
    atomic_store(&w->source_rank, st->MPI_SOURCE);
    /* How much arrived: a staged CUDA receive copies only that back (and
     * only it needs to know: a call per receive). */
    MPI_Count bytes = 0;
    if (w->p2p_stage && MPI_Get_elements_x(st, MPI_BYTE, &bytes) == MPI_SUCCESS &&
        bytes != MPI_UNDEFINED)
      w->recv_bytes = (int64_t)bytes;
  }
  return EVMPI_OK;
}

/* A send's or a receive's channel: its kind, peer and tag in one word.
 * MPI matches the works of one channel in issue order, and a work that
 * completes before an older one of its channel is held (release_held_locked). */
static uint64_t channel_key(const evmpi_work_t *w) {
  return (uint64_t)(uint32_t)w->args.p2p.peer << 32 | (uint64_t)(uint32_t)w->args.p2p.tag << 1 |
         (w->kind == EVMPI_WORK_SEND);
}

/* Moves issued requests from the incoming stack into the arrays (under
 * mu), in issue order; new requests count as activity for the back-off.
 * Returns whether any came. */
static bool adopt_incoming(evmpi_poller_t *p) {
  evmpi_work_t *stack = atomic_exchange(&p->incoming, NULL), *newest = stack;
  bool fresh = stack != NULL;
  if (fresh) {
    evmpi_work_t *fifo = NULL, *last = stack; /* reversed: oldest first */
    while (stack) {
      evmpi_work_t *next = stack->next;
      stack->next = fifo;
      fifo = stack;
      stack = next;
    }
    if (p->adopt_tail)
      p->adopt_tail->next = fifo;
    else
      p->adopt_head = fifo;
    p->adopt_tail = last;
    /* The newest submission's time: no clock read of our own. */
    if (newest->t_queued > p->last_activity)
      p->last_activity = newest->t_queued;
  }
  while (p->adopt_head) {
    if (grow_arrays(p, p->n + 1) != 0)
      break; /* out of memory: try again on the next round */
    evmpi_work_t *w = p->adopt_head;
    p->adopt_head = w->next;
    if (!p->adopt_head)
      p->adopt_tail = NULL;
    w->next = NULL;
    p->reqs[p->n] = w->request;
    p->works[p->n] = w;
    p->chan[p->n] = channel_key(w);
    p->n++;
    p->staged += w->p2p_stage != NULL;
    int64_t bytes = work_bytes(w);
    if (bytes >= LARGE_BYTES) {
      p->large++;
      p->large_bytes += bytes;
    }
    if (w->p2p_deadline_ns && w->p2p_deadline_ns < p->next_deadline)
      p->next_deadline = w->p2p_deadline_ns;
  }
  return fresh;
}

/* Whether submissions are waiting to be adopted (under mu). */
static bool incoming_waiting(evmpi_poller_t *p) {
  return atomic_load(&p->incoming) != NULL || p->adopt_head != NULL;
}

/* Sleeps on cv until until (NULL: until signalled), unless a submission
 * is waiting (under mu). sleeping is set before incoming is looked at,
 * and a submission pushes before it looks at sleeping (both sequentially
 * consistent), so one of them sees the other: no wake-up is lost. */
static void sleep_on_cv_locked(evmpi_poller_t *p, const struct timespec *until) {
  atomic_store(&p->sleeping, true);
  if (!incoming_waiting(p)) {
    if (until)
      pthread_cond_timedwait(&p->cv, &p->mu, until);
    else
      pthread_cond_wait(&p->cv, &p->mu);
  }
  atomic_store(&p->sleeping, false);
}

/* A send to the group's own rank can only be matched by a receive of this
 * group: once destroy has closed the gate and cancelled the receives,
 * nothing will ever match it, so it is cancelled too. Left to MPI instead,
 * it would outlive its communicator: MPICH then waits for it forever, and
 * crashes in a later MPI_Isend on a communicator that reuses its context. */
static bool unmatchable_at_stop(const evmpi_work_t *w) {
  return w->kind == EVMPI_WORK_RECV || w->args.p2p.peer == w->pg->rank;
}

/* A request is cancelled once: a second MPI_Cancel of an any-source
 * receive crashed Open MPI. */
static void cancel_once(evmpi_work_t *w, MPI_Request *req) {
  if (!w->cancel_sent) {
    evmpi__mpi_cancel(req);
    w->cancel_sent = true;
  }
}

static void cancel_receives(evmpi_poller_t *p) {
  for (size_t i = 0; i < p->n; i++)
    if (unmatchable_at_stop(p->works[i]) && p->reqs[i] != MPI_REQUEST_NULL)
      cancel_once(p->works[i], &p->reqs[i]);
}

/* While the loop thread polls (bridge.c) it tests the requests itself: a
 * second thread spinning on the same core would only take turns with it
 * (sched_yield, a context switch each way), and waking the poller for
 * each submission cost a futex wake and a switch per 8 B round trip. So
 * the poller sleeps until the loop's window ends or the loop thread says
 * it stopped (evmpi__poller_loop_done); sleeping stays false, so
 * submissions do not wake it (the loop thread adopts them). A window
 * that grew while it slept is slept out too: a test of its own there
 * would only take the loop thread's completions from it, each then a
 * handoff through the eventfd. The loop thread's test reaches every
 * request, however many are pending (LOOP_TEST_MAX and its walk). It
 * tests when the window ends, and for what is its own: staged works,
 * deadlines, stop. Called under mu; false
 * when the loop is not polling. */
static bool wait_for_loop_locked(evmpi_poller_t *p) {
  bool waited = false;
  for (;;) {
    int64_t t = atomic_load_explicit(&p->loop_until, memory_order_relaxed);
    if (t > p->next_deadline)
      t = p->next_deadline;
    if (p->stopping || p->staged || t <= evmpi__now_ns())
      return waited;
    struct timespec until = {t / 1000000000, t % 1000000000};
    p->loop_wait = true;
    pthread_cond_timedwait(&p->cv, &p->mu, &until);
    p->loop_wait = false;
    waited = true;
  }
}

void evmpi__poller_loop_done(evmpi_poller_t *p) {
  atomic_store_explicit(&p->loop_until, 0, memory_order_relaxed);
  pthread_mutex_lock(&p->mu);
  if (p->loop_wait)
    pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

static void sleep_backoff(evmpi_poller_t *p) {
  pthread_mutex_lock(&p->mu);
  bool waited = wait_for_loop_locked(p);
  int64_t now = evmpi__now_ns();
  int64_t quiet = now - p->last_activity;
  int64_t deadline = p->next_deadline;
  int64_t spin = SPIN_NS;
  if (p->large && evmpi__mpi_rendezvous_needs_polling())
    spin += p->large_bytes < LARGE_SPIN_MAX_NS ? p->large_bytes : LARGE_SPIN_MAX_NS;
  pthread_mutex_unlock(&p->mu);
  if (waited)
    return;
  if (quiet < spin) {
    sched_yield();
    return;
  }
  int64_t ns = quiet / 8;
  ns = ns < MIN_SLEEP_NS ? MIN_SLEEP_NS : ns > p->max_sleep_ns ? p->max_sleep_ns : ns;
  if (deadline - now < ns) /* never sleep past a send's or receive's deadline */
    ns = deadline > now ? deadline - now : 0;
  if (ns == 0)
    return;
  struct timespec until = evmpi__timespec_after(CLOCK_MONOTONIC, ns);
  pthread_mutex_lock(&p->mu);
  sleep_on_cv_locked(p, &until); /* stopping too: destroy may wait long for sends */
  pthread_mutex_unlock(&p->mu);
}

/* A list of finished works, oldest first, for finish_list. */
typedef struct {
  evmpi_work_t *head, *tail;
  int64_t now; /* when the test that found them ended (0: finish reads the clock) */
} done_list_t;

static void done_append(evmpi_poller_t *p, done_list_t *d, evmpi_work_t *w) {
  p->staged -= w->p2p_stage != NULL;
  int64_t bytes = work_bytes(w);
  if (bytes >= LARGE_BYTES) {
    p->large--;
    p->large_bytes -= bytes;
  }
  w->state = EVMPI_WORK_DONE;
  EVMPI__FIFO_PUSH(d->head, d->tail, w);
}

/* A held work's channel, and whether an older work of it is pending. */
typedef struct {
  uint64_t key;
  bool blocked;
} held_chan_t;

/* Where key is among c[0..n); n when it is not. */
static size_t chan_at(const held_chan_t *c, size_t n, uint64_t key) {
  size_t k = 0;
  while (k < n && c[k].key != key)
    k++;
  return k;
}

/* Moves held works whose older same-channel works have all finished to d,
 * in issue order (under mu). A channel is blocked from the first older
 * work of it still pending (or held behind one) on. Only the channels of
 * held works matter, and a pending work is one whose request is still
 * active (a held or finished one's is MPI_REQUEST_NULL): the scan reads
 * the contiguous requests and channels, and a work itself only where its
 * request is done (thousands of receives left posted made every
 * completion walk through every one of their works, out of cache). */
static void release_held_locked(evmpi_poller_t *p, done_list_t *d) {
  if (p->nheld == 0)
    return;
  enum { HELD_STACK = 16 };
  held_chan_t stack[HELD_STACK];
  held_chan_t *chans = stack;
  size_t nchans = 0, cap = HELD_STACK, last = 0, held = p->nheld;
  for (size_t i = 0; i < p->n && held > 0; i++) {
    if (p->reqs[i] != MPI_REQUEST_NULL || !p->works[i]->held)
      continue;
    held--;
    last = i;
    if (chan_at(chans, nchans, p->chan[i]) < nchans)
      continue;
    if (nchans == cap) {
      held_chan_t *more = malloc(2 * cap * sizeof *more);
      if (!more) { /* out of memory: all stay held until a later pass */
        nchans = 0;
        break;
      }
      memcpy(more, chans, nchans * sizeof *more);
      if (chans != stack)
        free(chans);
      chans = more;
      cap *= 2;
    }
    chans[nchans++] = (held_chan_t){p->chan[i], false};
  }
  for (size_t i = 0; nchans > 0 && i <= last; i++) {
    size_t k = chan_at(chans, nchans, p->chan[i]);
    if (k == nchans)
      continue; /* no held work of this channel */
    if (p->reqs[i] != MPI_REQUEST_NULL) {
      chans[k].blocked = true; /* pending: later works of its channel wait for it */
      continue;
    }
    evmpi_work_t *w = p->works[i];
    if (!w->held || chans[k].blocked)
      continue; /* finished already, or behind an older one */
    w->held = false;
    p->nheld--;
    done_append(p, d, w);
  }
  if (chans != stack)
    free(chans);
}

/* Closes the gaps that finished works left (under mu), keeping the order.
 * A pending work's request is active: only the others are read. */
static void compact_locked(evmpi_poller_t *p) {
  size_t j = 0;
  for (size_t i = 0; i < p->n; i++) {
    if (p->reqs[i] != MPI_REQUEST_NULL || p->works[i]->state != EVMPI_WORK_DONE) {
      p->works[j] = p->works[i];
      p->reqs[j] = p->reqs[i];
      p->chan[j] = p->chan[i];
      j++;
    }
  }
  p->n = j;
}

/* The MPI_Testsome call itself failed (rather than a request): each
 * request is tested on its own, so that those still active stay pending
 * (their buffers are in use) and only those that failed or finished leave. */
static int test_each(MPI_Request *reqs, size_t n, int *idx, MPI_Status *st) {
  int out = 0;
  for (size_t i = 0; i < n; i++) {
    if (reqs[i] == MPI_REQUEST_NULL)
      continue;
    int flag = 0;
    int rc = MPI_Test(&reqs[i], &flag, &st[out]);
    if (rc != MPI_SUCCESS) {
      st[out].MPI_ERROR = rc;
      reqs[i] = MPI_REQUEST_NULL; /* a failed request is no longer active */
      flag = 1;
    } else if (flag) {
      st[out].MPI_ERROR = MPI_SUCCESS;
    }
    if (flag)
      idx[out++] = (int)i;
  }
  return out;
}

/* One MPI_Testsome over reqs (n of them), with room for n results in idx
 * and st; how many completed (0 for MPI_UNDEFINED), and whether each
 * status carries its own error. */
static int testsome(MPI_Request *reqs, size_t n, int *idx, MPI_Status *st, bool *per_status) {
  int outcount = 0;
  evmpi__mpi_match_enter();
  evmpi__mpi_test_begin();
  int rc = MPI_Testsome((int)n, reqs, &outcount, idx, st);
  *per_status = rc == MPI_ERR_IN_STATUS;
  if (rc != MPI_SUCCESS && !*per_status) {
    outcount = test_each(reqs, n, idx, st);
    *per_status = true;
  }
  evmpi__mpi_test_end();
  evmpi__mpi_match_leave();
  return outcount == MPI_UNDEFINED || outcount < 0 ? 0 : outcount;
}

/* The works at pos[idx[k]] (pos NULL: at idx[k]) whose requests completed
 * get their outcome and are held; those that may finish now are taken out
 * of the arrays, marked done and appended to d, in issue order, for
 * finish_list to complete after mu is released (under mu). */
static void take_completed_locked(evmpi_poller_t *p, const size_t *pos, const int *idx,
                                  const MPI_Status *st, int outcount, bool per_status,
                                  done_list_t *d, bool on_loop) {
  if (outcount <= 0)
    return;
  for (int k = 0; k < outcount; k++) {
    evmpi_work_t *w = p->works[pos ? pos[idx[k]] : (size_t)idx[k]];
    int wrc = per_status ? st[k].MPI_ERROR : MPI_SUCCESS;
    w->outcome = request_outcome(w, wrc, &st[k]);
    w->ran_on_loop = on_loop; /* which thread's test saw it (the timeline says) */
    w->held = true; /* released below, in issue order */
  }
  p->nheld += (size_t)outcount;
  release_held_locked(p, d);
  if (d->head) {
    d->now = evmpi__now_ns(); /* one clock read for the batch */
    p->last_activity = d->now;
    compact_locked(p);
  }
}

/* One test of every pending request (under mu), with room for p->n
 * results in idx and st. */
static void test_all_locked(evmpi_poller_t *p, int *idx, MPI_Status *st, done_list_t *d,
                            bool on_loop) {
  bool per_status;
  int out = testsome(p->reqs, p->n, idx, st, &per_status);
  take_completed_locked(p, NULL, idx, st, out, per_status, d, on_loop);
}

/* The windowed test when more than LOOP_TEST_MAX requests are pending
 * (under mu): the loop thread's every time, the poller's between its
 * tests of every request (test_pending_locked). First the oldest
 * LOOP_OLDEST, in place: MPI matches them first, and a window of sends or receives completes from there.
 * When none of them is done, one MPI_Testsome over copies of the newest
 * LOOP_NEWEST (a stream's, behind receives left posted: a server's, or
 * thousands) and LOOP_MIDDLE more from a cursor that walks the rest, so
 * that every request is tested while the poller sleeps through the loop's
 * window; the completed handles (MPI_REQUEST_NULL now) are copied back. */
static void test_window_locked(evmpi_poller_t *p, done_list_t *d, bool on_loop) {
  int idx[LOOP_TEST_MAX];
  MPI_Status st[LOOP_TEST_MAX];
  bool per_status;
  int out = testsome(p->reqs, LOOP_OLDEST, idx, st, &per_status);
  if (out > 0) {
    take_completed_locked(p, NULL, idx, st, out, per_status, d, on_loop);
    return;
  }
  size_t pos[LOOP_MIDDLE + LOOP_NEWEST], k = 0;
  MPI_Request reqs[LOOP_MIDDLE + LOOP_NEWEST];
  size_t middle = p->n - LOOP_OLDEST - LOOP_NEWEST; /* > LOOP_MIDDLE */
  size_t at = p->cursor % middle;
  for (size_t i = 0; i < LOOP_MIDDLE; i++) {
    pos[k++] = LOOP_OLDEST + at;
    if (++at == middle)
      at = 0;
  }
  p->cursor = at;
  for (size_t i = p->n - LOOP_NEWEST; i < p->n; i++)
    pos[k++] = i;
  for (size_t i = 0; i < k; i++)
    reqs[i] = p->reqs[pos[i]];
  out = testsome(reqs, k, idx, st, &per_status);
  for (int i = 0; i < out; i++)
    p->reqs[pos[idx[i]]] = reqs[idx[i]];
  take_completed_locked(p, pos, idx, st, out, per_status, d, on_loop);
}

/* The poller thread's test (under mu), with room for p->n results in idx
 * and st; whether it tested every request (all: it must). MPI_Testsome
 * reads every request it is given, so a test of thousands of pending
 * receives costs tens of microseconds, and when a stream of messages
 * flowed behind them the poller spent most of each message's time in two
 * such tests (the second: see poller_main). Past LOOP_TEST_MAX it tests
 * every request at most once per FULL_SPACING times what its last test of
 * all of them took (a thirty-third of its time, whatever their number),
 * and the window of the oldest, the newest and the walk through the rest
 * in between. A message for a receive in the middle is so still seen
 * within that spacing (about a millisecond for 10,000), and at the first
 * test after a sleep as long. */
static bool test_pending_locked(evmpi_poller_t *p, int *idx, MPI_Status *st, done_list_t *d,
                                bool all) {
  if (p->n <= LOOP_TEST_MAX) {
    test_all_locked(p, idx, st, d, false);
    return true;
  }
  int64_t start = evmpi__now_ns();
  if (!all && start - p->full_at < FULL_SPACING * p->full_ns) {
    test_window_locked(p, d, false);
    return false;
  }
  test_all_locked(p, idx, st, d, false);
  p->full_at = d->head ? d->now : evmpi__now_ns();
  p->full_ns = p->full_at - start;
  return true;
}

/* The works' callbacks go to the loop in one hand-over (a window of
 * sends that completed together paid one per send). */
static void finish_list(evmpi_work_t *done, int64_t now) {
  evmpi_future_batch_t batch = {0};
  while (done) {
    evmpi_work_t *next = done->next;
    int status = done->outcome;
    int64_t at = now;
#ifdef EVMPI_HAVE_CUDA
    if (done->p2p_stage) { /* the arrived message goes to the device first */
      status = evmpi__cuda_p2p_finish(done, status);
      at = 0; /* finished after that copy */
    }
#endif
    evmpi__work_finish_batch(done, status, at, &batch);
    done = next;
  }
  evmpi__future_batch_post(&batch);
}

/* Hands over from mu to finish_mu, finishes d's works, lets go: a test on
 * another thread that took later completions finishes them after these. */
static void finish_in_order_unlock(evmpi_poller_t *p, done_list_t *d) {
  if (!d->head) {
    pthread_mutex_unlock(&p->mu);
    return;
  }
  pthread_mutex_lock(&p->finish_mu);
  pthread_mutex_unlock(&p->mu);
  finish_list(d->head, d->now);
  pthread_mutex_unlock(&p->finish_mu);
}

/* Takes every pending work out of the arrays (under mu) into d: receives
 * are cancelled and every active request freed, so nobody tests them
 * again; MPI may still use their buffers. Held works completed already
 * and keep their outcome. */
static void abandon_all_locked(evmpi_poller_t *p, int status, const char *why, done_list_t *d) {
  adopt_incoming(p);
  for (size_t i = 0; i < p->n; i++) {
    evmpi_work_t *w = p->works[i];
    if (p->reqs[i] != MPI_REQUEST_NULL) {
      if (unmatchable_at_stop(w))
        cancel_once(w, &p->reqs[i]);
      MPI_Request_free(&p->reqs[i]);
      w->abandoned = true;
      free(w->error_text);
      char what[128];
      describe(what, sizeof what, w);
      w->error_text = evmpi__asprintf("%s: %s%s", what, why,
                                      w->kind == EVMPI_WORK_SEND ? "; MPI may still deliver it" : "");
      w->outcome = status;
    }
    w->held = false;
    done_append(p, d, w);
  }
  p->n = 0;
  p->nheld = 0;
}

/* Set once any group's p2p timeout broke it (evmpi__p2p_broken_any). */
static atomic_bool p2p_broken_any;

bool evmpi__p2p_broken_any(void) { return atomic_load(&p2p_broken_any); }

/* The group is broken by a missed deadline (under mu); the first reason
 * stays. */
static void break_locked(evmpi_poller_t *p, const char *why) {
  if (p->broken)
    return;
  p->broken = strdup(why);
  if (!p->broken)
    p->broken = strdup("a send or receive timed out");
  atomic_store(&p->is_broken, true);
  atomic_store(&p2p_broken_any, true);
}

/* One pending receive whose deadline passed (under mu): cancelled, then
 * tested once. Returns what became of it: its fate for the timeout
 * message, or NULL when it completed after all (matched just in time, or
 * an MPI error), with its outcome set and held for the usual order. */
static const char *expire_receive_locked(evmpi_poller_t *p, size_t i) {
  evmpi_work_t *w = p->works[i];
  cancel_once(w, &p->reqs[i]);
  MPI_Status st;
  int flag = 0, cancelled = 0;
  int rc = evmpi__mpi_test(&p->reqs[i], &flag, &st);
  if (rc != MPI_SUCCESS)
    p->reqs[i] = MPI_REQUEST_NULL; /* a failed request is no longer active */
  if (rc == MPI_SUCCESS && flag)
    MPI_Test_cancelled(&st, &cancelled);
  if (rc != MPI_SUCCESS || (flag && !cancelled)) {
    w->outcome = request_outcome(w, rc, &st);
    w->held = true;
    p->nheld++;
    return NULL;
  }
  if (flag)
    return "cancelled, nothing arrived";
  /* It matched a message whose transfer has not finished (a peer gone in
   * the middle of a large message): MPI cannot cancel it any more. */
  MPI_Request_free(&p->reqs[i]);
  w->abandoned = true;
  return "a message had matched and not finished: abandoned, MPI may still write the buffer";
}

/* Fails the pending works whose deadline has passed (under mu) and
 * recomputes the earliest deadline left. A work whose request completed
 * is held or done already and has no deadline any more. */
static void expire_locked(evmpi_poller_t *p, done_list_t *d) {
  int64_t now = evmpi__now_ns();
  if (now < p->next_deadline)
    return;
  int64_t next = INT64_MAX;
  bool changed = false;
  for (size_t i = 0; i < p->n; i++) {
    evmpi_work_t *w = p->works[i];
    if (w->state == EVMPI_WORK_DONE || w->held || !w->p2p_deadline_ns ||
        p->reqs[i] == MPI_REQUEST_NULL)
      continue;
    if (w->p2p_deadline_ns > now) {
      next = w->p2p_deadline_ns < next ? w->p2p_deadline_ns : next;
      continue;
    }
    changed = true;
    const char *fate;
    if (w->kind == EVMPI_WORK_RECV) {
      fate = expire_receive_locked(p, i);
      if (!fate)
        continue;
    } else {
      MPI_Request_free(&p->reqs[i]);
      w->abandoned = true;
      fate = "abandoned, MPI may still deliver it";
    }
    char what[160], why[224];
    describe(what, sizeof what, w);
    snprintf(why, sizeof why, "%s timed out after %d ms", what, w->p2p_timeout_ms);
    free(w->error_text);
    w->error_text = evmpi__asprintf("%s; %s; the group is broken", why, fate);
    w->outcome = EVMPI_ERR_TIMEOUT;
    break_locked(p, why);
    /* Done at once, as a cancelled receive: it holds nobody back. */
    done_append(p, d, w);
  }
  p->next_deadline = next;
  if (changed) {
    release_held_locked(p, d);
    compact_locked(p);
    p->last_activity = now;
  }
}

static void *poller_main(void *arg) {
  evmpi_pg_t *pg = arg;
  evmpi_poller_t *p = &pg->poller;
#ifdef __linux__
  prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
#endif
  scratch_t s = {0};
  for (;;) {
    pthread_mutex_lock(&p->mu);
    bool fresh = adopt_incoming(p);
    done_list_t d = {0};
    expire_locked(p, &d);
    if (p->stopping) {
      cancel_receives(p);
      if (p->broken && p->n > 0)
        /* A peer missed a deadline: destroy does not wait for it. */
        abandon_all_locked(p, EVMPI_ERR_ABORTED,
                           "abandoned: the group was destroyed after a send or receive "
                           "timed out and broke it", &d);
      else if (p->stop_deadline && p->n > 0 && evmpi__now_ns() >= p->stop_deadline)
        abandon_all_locked(p, EVMPI_ERR_TIMEOUT,
                           "still pending when destroy's time ran out, abandoned", &d);
    }
    if (p->n == 0) {
      if (p->stopping) {
        p->exited = true;
        finish_in_order_unlock(p, &d);
        break;
      }
      if (d.head) { /* the last ones missed their deadline */
        finish_in_order_unlock(p, &d);
        continue;
      }
      if (wait_for_loop_locked(p)) {
        pthread_mutex_unlock(&p->mu);
        continue;
      }
      sleep_on_cv_locked(p, NULL);
      pthread_mutex_unlock(&p->mu);
      continue;
    }
    if (grow_scratch(&s, p->n) != 0) {
      pthread_mutex_unlock(&p->mu);
      sleep_backoff(p); /* out of memory: wait a little */
      continue;
    }
    bool all = test_pending_locked(p, s.idx, s.st, &d, false);
    /* Open MPI's MPI_Testsome progresses only when it found nothing
     * complete, and returns without looking again: what that progress
     * completed (a message that came while we slept) shows at the next
     * test. A second test, of the same requests, sees it now, not a sleep
     * later. */
    if (!d.head)
      test_pending_locked(p, s.idx, s.st, &d, all);
    bool done = d.head != NULL;
    finish_in_order_unlock(p, &d);
    if (!done && !fresh)
      sleep_backoff(p);
  }
  free(s.idx);
  free(s.st);
  return NULL;
}

/* The loop thread's test, while it polls for the next completion (see
 * bridge.c): a receive that matched is then finished on the loop thread
 * itself, with no handoff from the poller thread, which on a rank bound to
 * one core costs a sched_yield and a context switch or two each way.
 * trylock: never waits for the poller's MPI calls; at most LOOP_TEST_MAX
 * requests (the oldest and the newest), so the scratch lives on the stack. */
bool evmpi__poller_test(evmpi_poller_t *p, bool *pending, int64_t *done_ns) {
  *pending = true; /* unknown: the poller has the lock */
  if (pthread_mutex_trylock(&p->mu) != 0)
    return false;
  adopt_incoming(p);
  done_list_t d = {0};
  if (p->n > 0 && !p->stopping && p->staged == 0) {
    if (p->n <= LOOP_TEST_MAX) {
      int idx[LOOP_TEST_MAX];
      MPI_Status st[LOOP_TEST_MAX];
      test_all_locked(p, idx, st, &d, true);
    } else {
      test_window_locked(p, &d, true);
    }
  }
  *pending = p->n > 0;
  bool done = d.head != NULL;
  if (done)
    *done_ns = d.now;
  finish_in_order_unlock(p, &d);
  return done;
}

int evmpi__poller_start(evmpi_poller_t *p, evmpi_pg_t *pg) {
  memset(p, 0, sizeof *p);
  pthread_mutex_init(&p->mu, NULL);
  pthread_mutex_init(&p->finish_mu, NULL);
  atomic_init(&p->loop_until, 0);
  atomic_init(&p->is_broken, false);
  atomic_init(&p->incoming, NULL);
  atomic_init(&p->sleeping, false);
  atomic_init(&p->refusing, false);
  atomic_init(&p->timeout_ms, 0);
  p->next_deadline = INT64_MAX;
  p->max_sleep_ns = pg->settings.p2p_idle_poll_ms * 1000000; /* range: options.c */
  evmpi__cond_init_monotonic(&p->cv);
  p->made = true;
  if (pthread_create(&p->thread, NULL, poller_main, pg) != 0)
    return evmpi__fail(EVMPI_ERR_NOMEM, "pg_create: cannot start the poller thread");
  p->started = true;
  return EVMPI_OK;
}

/* Lock-free: a stream of sends and receives issued from callbacks, while
 * the loop thread or the poller holds mu for its tests, made every
 * submission wait for that lock (and hand it back with a futex wake). */
int evmpi__poller_submit(evmpi_poller_t *p, evmpi_work_t *w) {
  /* Destroy closes the group's gate and waits for the submissions past it
   * before it stops the poller, so none is pushed after the thread left;
   * this check is for evmpi_pg_abort's path, which does not wait. */
  if (atomic_load_explicit(&p->refusing, memory_order_acquire)) {
    if (unmatchable_at_stop(w))
      evmpi__mpi_cancel(&w->request);
    MPI_Request_free(&w->request);
    return evmpi__fail(EVMPI_ERR_ABORTED, "%s: the group is being destroyed", w->op->opname);
  }
  w->state = EVMPI_WORK_RUNNING;
  int timeout_ms = atomic_load_explicit(&p->timeout_ms, memory_order_relaxed);
  if (timeout_ms > 0) { /* the adopter makes it the next deadline if it is */
    w->p2p_timeout_ms = timeout_ms;
    w->p2p_deadline_ns = w->t_started + (int64_t)timeout_ms * 1000000;
  }
  atomic_fetch_add_explicit(&w->pg->inflight, 1, memory_order_relaxed);
  evmpi_work_t *head = atomic_load_explicit(&p->incoming, memory_order_relaxed);
  do
    w->next = head;
  while (!atomic_compare_exchange_weak(&p->incoming, &head, w));
  if (atomic_load(&p->sleeping)) {
    pthread_mutex_lock(&p->mu);
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
  }
  return EVMPI_OK;
}

int evmpi__poller_cancel(evmpi_poller_t *p, evmpi_work_t *w) {
  pthread_mutex_lock(&p->mu);
  adopt_incoming(p); /* every pending work in the arrays, in issue order */
  size_t at = 0;
  while (at < p->n && p->works[at] != w)
    at++;
  if (at == p->n || w->held) {
    pthread_mutex_unlock(&p->mu);
    return evmpi__fail(EVMPI_ERR_STATE, "work_abort: %s (#%llu) has already completed",
                       w->op->name, (unsigned long long)w->seq);
  }
  /* An unmatched receive completes at once when cancelled; a matched one
   * cannot be cancelled and completes normally, later, in the poller. */
  MPI_Status st;
  int flag = 0;
  cancel_once(w, &p->reqs[at]);
  int rc = evmpi__mpi_test(&p->reqs[at], &flag, &st);
  if (!flag && rc == MPI_SUCCESS) {
    pthread_mutex_unlock(&p->mu);
    return evmpi__fail(EVMPI_ERR_STATE, "work_abort: %s (#%llu) has matched a message already",
                       w->op->name, (unsigned long long)w->seq);
  }
  if (rc != MPI_SUCCESS)
    p->reqs[at] = MPI_REQUEST_NULL;
  int outcome = request_outcome(w, rc, &st);
  w->outcome = outcome;
  done_list_t d = {0};
  if (outcome == EVMPI_ERR_ABORTED) {
    /* A cancelled receive matched nothing: it holds nobody back. */
    done_append(p, &d, w);
  } else {
    w->held = true; /* finished in order with the others, below */
    p->nheld++;
  }
  release_held_locked(p, &d);
  compact_locked(p);
  finish_in_order_unlock(p, &d);
  if (outcome == EVMPI_ERR_ABORTED)
    return EVMPI_OK;
  return evmpi__fail(EVMPI_ERR_STATE, "work_abort: %s (#%llu) completed before it could be "
                     "cancelled", w->op->name, (unsigned long long)w->seq);
}

void evmpi__poller_stop(evmpi_poller_t *p, const char *abandon_why, int64_t deadline_ns) {
  if (!p->started || p->stopped)
    return;
  p->stopped = true;
  if (abandon_why)
    evmpi__poller_fail_pending(p, EVMPI_ERR_ABORTED, abandon_why);
  pthread_mutex_lock(&p->mu);
  atomic_store(&p->refusing, true);
  p->stopping = true;
  p->stop_deadline = deadline_ns;
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
  pthread_join(p->thread, NULL);
}

void evmpi__poller_fail_pending(evmpi_poller_t *p, int status, const char *why) {
  pthread_mutex_lock(&p->mu);
  done_list_t d = {0};
  abandon_all_locked(p, status, why, &d);
  finish_in_order_unlock(p, &d);
}

void evmpi__poller_set_timeout(evmpi_poller_t *p, int timeout_ms) {
  atomic_store(&p->timeout_ms, timeout_ms);
}

int evmpi__poller_set_deadline(evmpi_poller_t *p, evmpi_work_t *w, int timeout_ms) {
  pthread_mutex_lock(&p->mu);
  /* Done under mu: taken out of the arrays, finished (or about to be). */
  if (w->state == EVMPI_WORK_DONE || w->held || atomic_load(&w->finished)) {
    pthread_mutex_unlock(&p->mu);
    return evmpi__fail(EVMPI_ERR_STATE, "work_set_deadline: %s (#%llu) has already completed",
                       w->op->name, (unsigned long long)w->seq);
  }
  w->p2p_timeout_ms = timeout_ms;
  w->p2p_deadline_ns = timeout_ms > 0 ? w->t_started + (int64_t)timeout_ms * 1000000 : 0;
  if (w->p2p_deadline_ns && w->p2p_deadline_ns < p->next_deadline) {
    p->next_deadline = w->p2p_deadline_ns;
    if (atomic_load(&p->sleeping) || p->loop_wait)
      pthread_cond_signal(&p->cv); /* it may sleep past the new deadline */
  }
  pthread_mutex_unlock(&p->mu);
  return EVMPI_OK;
}

bool evmpi__poller_quiet(evmpi_poller_t *p, int64_t quiet_ns) {
  if (atomic_load_explicit(&p->incoming, memory_order_relaxed) != NULL)
    return false; /* a submission waits to be adopted */
  /* A holder with nothing pending (the poller thread starting or between
   * sleeps, the loop thread ending its window) lets go at once unless it
   * was preempted there: a few yields give it the core. */
  int tries = 0;
  while (pthread_mutex_trylock(&p->mu) != 0) {
    if (++tries == QUIET_TRIES)
      return false;
    sched_yield();
  }
  bool quiet = p->n == 0 && !incoming_waiting(p) && evmpi__now_ns() - p->last_activity >= quiet_ns;
  pthread_mutex_unlock(&p->mu);
  return quiet;
}

bool evmpi__poller_broken(evmpi_poller_t *p, char *buf, size_t len) {
  if (!atomic_load(&p->is_broken))
    return false; /* every submission asks: no lock on that path */
  pthread_mutex_lock(&p->mu);
  bool broken = p->broken != NULL;
  if (broken && buf && len)
    snprintf(buf, len, "%s", p->broken);
  pthread_mutex_unlock(&p->mu);
  return broken;
}

void evmpi__poller_fini(evmpi_poller_t *p) {
  if (!p->made)
    return;
  free(p->broken);
  p->broken = NULL;
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->finish_mu);
  pthread_cond_destroy(&p->cv);
  free(p->reqs);
  free(p->works);
  free(p->chan);
  p->made = false;
}
