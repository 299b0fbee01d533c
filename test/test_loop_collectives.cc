// test_loop_collectives.cc: small collectives that a callback submits run on
// the loop thread (EVMPI_LOOP_COLLECTIVES, worker.c). Which thread ran a
// collective is read back from the group's EVMPI_TIMELINE trace. The tests
// try to break the claim: ranks that choose differently, a late peer (the
// gate must send the collective to the worker, not hold the loop), a
// callback that waits for or tests the collective it just submitted, one
// that destroys the group or aborts the claimed collective.
#include "harness.h"
#include "timeline_reader.h"

#include <dlfcn.h>
#include <event2/event.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

// Every write(2) of the process goes through here on its way to libc (the
// executable's definition comes first). Armed with a group's eventfd, a
// thread other than the loop's that signals it sleeps for a while after
// the write: a worker that has posted a completion and is slow to go on,
// as one preempted under load is.
static std::atomic<int> slow_fd{-1};
static std::atomic<long> slow_tid{0}; // the loop thread, never slowed
static std::atomic<int> slow_writes{0};
extern "C" ssize_t write(int fd, const void *buf, size_t n) {
  static ssize_t (*next)(int, const void *, size_t) =
      reinterpret_cast<ssize_t (*)(int, const void *, size_t)>(dlsym(RTLD_NEXT, "write"));
  bool slow = fd >= 0 && fd == slow_fd.load() && (long)syscall(SYS_gettid) != slow_tid.load();
  if (slow)
    slow_writes.fetch_add(1); // before the write: the loop may see it at once
  ssize_t rc = next ? next(fd, buf, n) : syscall(SYS_write, fd, buf, n);
  if (slow)
    usleep(20000);
  return rc;
}

// While armed (above), an MPI_Allreduce off the loop thread waits a little
// first: the worker's first link then completes after its callback is set,
// and posts that completion (with the slow write) rather than leaving the
// loop thread to post it when the callback is added.
extern "C" int MPI_Allreduce(const void *sendbuf, void *recvbuf, int count, MPI_Datatype dtype,
                             MPI_Op op, MPI_Comm comm) {
  if (slow_fd.load() >= 0 && (long)syscall(SYS_gettid) != slow_tid.load())
    usleep(5000);
  return PMPI_Allreduce(sendbuf, recvbuf, count, dtype, op, comm);
}

namespace {

class LoopCollectives : public MpiTest {};

TimelineReader timeline("loopcoll");

// A group with a timeline and loop_collectives set to on (0 or 1), over comm.
evmpi_pg_t *make_group(struct event_base *base, MPI_Comm comm, int on) {
  evmpi_pg_options_t *o = nullptr;
  EXPECT_EQ(evmpi_pg_options_new(&o), EVMPI_OK);
  EXPECT_EQ(evmpi_pg_options_set_ignore_env(o, true), EVMPI_OK);
  EXPECT_EQ(evmpi_pg_options_set_loop_collectives(o, on), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(evmpi_pg_options_set_timeline(o, timeline.base()), EVMPI_OK);
  evmpi_pg_t *pg = nullptr;
  EXPECT_EQ(evmpi_pg_create_from_comm_with(base, comm, o, &pg), EVMPI_OK) << evmpi_last_error();
  evmpi_pg_options_free(o);
  return pg;
}

// A chain: each callback checks its allreduce (sum of rank + k over the
// group) and submits the next, until n links have run.
struct Chain {
  evmpi_pg_t *pg = nullptr;
  int n = 0, done = 0, wrong = 0;
  int32_t v = 0;
  int late_rank = -1, late_link = -1, late_ms = 0; // that rank sleeps before that link
};

int32_t expected_sum(evmpi_pg_t *pg, int k) {
  int s = evmpi_pg_size(pg);
  return (int32_t)(s * (s - 1) / 2 + s * k);
}

void submit_link(Chain *c);

void chain_cb(evmpi_work_t *w, void *arg) {
  auto *c = static_cast<Chain *>(arg);
  if (evmpi_work_status(w) != EVMPI_OK || c->v != expected_sum(c->pg, c->done))
    c->wrong++;
  evmpi_work_release(w);
  if (++c->done < c->n)
    submit_link(c);
}

void submit_link(Chain *c) {
  if (c->done == c->late_link && evmpi_pg_rank(c->pg) == c->late_rank)
    usleep(c->late_ms * 1000);
  c->v = (int32_t)(evmpi_pg_rank(c->pg) + c->done);
  evmpi_tensor_t t = evmpi_tensor_flat(&c->v, EVMPI_INT32, 1);
  evmpi_work_t *w = nullptr;
  if (evmpi_allreduce(c->pg, &t, EVMPI_SUM, &w) != EVMPI_OK) {
    c->wrong++;
    c->done = c->n;
    return;
  }
  evmpi_work_on_complete(w, chain_cb, c);
}

bool chain_over(void *arg) {
  auto *c = static_cast<Chain *>(arg);
  return c->done >= c->n;
}

// On one rank (MPI_COMM_SELF: no gate to wait for) every link that a
// callback submits runs on the loop thread; with the setting off, none.
TEST_F(LoopCollectives, CallbackChainsRunOnTheLoopThreadUnlessSwitchedOff) {
  for (int on = 1; on >= 0; on--) {
    struct event_base *base = event_base_new();
    size_t skip = timeline.size();
    evmpi_pg_t *pg = make_group(base, MPI_COMM_SELF, on);
    ASSERT_NE(pg, nullptr);
    Chain c;
    c.pg = pg;
    c.n = 50;
    submit_link(&c);
    EXPECT_TRUE(evmpi_test_run_until(base, chain_over, &c, EVMPI_TEST_TIMEOUT_MS));
    EXPECT_EQ(c.wrong, 0);
    evmpi_pg_destroy(pg); // flushes the timeline
    event_base_free(base);
    auto threads = timeline.threads_since(skip, "collective");
    ASSERT_EQ(threads.size(), 50u) << timeline.file();
    // The first link is submitted outside any callback: the worker's.
    EXPECT_EQ(threads[1], "worker");
    int on_loop = 0;
    for (auto &kv : threads)
      on_loop += kv.second == "loop";
    EXPECT_EQ(on_loop, on ? 49 : 0) << "loop_collectives " << on;
  }
}

// The first link runs on the worker, and its callback submits the
// second while the worker, having posted the first's completion, has yet
// to say so (slowed in its eventfd write). The loop thread delivered that
// completion itself, so no completion can come after its own: it runs the
// second link rather than leaving it to the worker (under CI's load the
// worker was late that way and the second link went to it). A round whose
// worker did not write the eventfd (the loop thread was polling already,
// as it may be under load) proves nothing about the wait: rounds go on
// until one did, each checked all the same.
TEST_F(LoopCollectives, TheLinkAfterTheWorkersRunsOnTheLoopWhileTheWorkerLingers) {
  slow_tid.store((long)syscall(SYS_gettid));
  int round = 0, slowed = 0;
  for (; round < 20 && slowed == 0; round++) {
    struct event_base *base = event_base_new();
    size_t skip = timeline.size();
    evmpi_pg_t *pg = make_group(base, MPI_COMM_SELF, 1);
    ASSERT_NE(pg, nullptr);
    slow_writes.store(0);
    slow_fd.store(evmpi_pg_fd(pg));
    Chain c;
    c.pg = pg;
    c.n = 3;
    submit_link(&c);
    EXPECT_TRUE(evmpi_test_run_until(base, chain_over, &c, EVMPI_TEST_TIMEOUT_MS));
    slow_fd.store(-1);
    EXPECT_EQ(c.wrong, 0);
    slowed = slow_writes.load();
    evmpi_pg_destroy(pg); // flushes the timeline
    event_base_free(base);
    auto threads = timeline.threads_since(skip, "collective");
    ASSERT_EQ(threads.size(), 3u) << timeline.file() << " round " << round;
    EXPECT_EQ(threads[1], "worker") << "round " << round;
    EXPECT_EQ(threads[2], "loop") << "round " << round;
    EXPECT_EQ(threads[3], "loop") << "round " << round;
  }
  EXPECT_GE(slowed, 1) << "in " << round << " rounds the worker never wrote the eventfd";
}

// Ranks that choose differently make the same MPI calls: a long chain of
// allreduces, broadcasts and barriers, with 1 MiB allreduces (too large
// for the loop thread) among them, agrees on every result.
struct Mixed {
  evmpi_pg_t *pg = nullptr;
  int n = 0, done = 0, wrong = 0;
  std::vector<float> big;
  int32_t small = 0;
};

void mixed_submit(Mixed *m);

void mixed_cb(evmpi_work_t *w, void *arg) {
  auto *m = static_cast<Mixed *>(arg);
  int s = evmpi_pg_size(m->pg), k = m->done;
  bool ok = evmpi_work_status(w) == EVMPI_OK;
  switch (k % 4) {
  case 0:
    ok = ok && m->small == (int32_t)(s * (s - 1) / 2 + s * k);
    break;
  case 1:
    ok = ok && m->small == (int32_t)(1000 + k);
    break;
  case 3:
    ok = ok && m->big.front() == (float)s && m->big.back() == (float)s;
    break;
  }
  if (!ok)
    m->wrong++;
  evmpi_work_release(w);
  if (++m->done < m->n)
    mixed_submit(m);
}

void mixed_submit(Mixed *m) {
  int k = m->done, r = evmpi_pg_rank(m->pg);
  evmpi_work_t *w = nullptr;
  evmpi_tensor_t t = evmpi_tensor_flat(&m->small, EVMPI_INT32, 1);
  int rc;
  switch (k % 4) {
  case 0:
    m->small = (int32_t)(r + k);
    rc = evmpi_allreduce(m->pg, &t, EVMPI_SUM, &w);
    break;
  case 1:
    m->small = r == k % evmpi_pg_size(m->pg) ? (int32_t)(1000 + k) : -1;
    rc = evmpi_broadcast(m->pg, &t, k % evmpi_pg_size(m->pg), &w);
    break;
  case 2:
    rc = evmpi_barrier(m->pg, &w);
    break;
  default: {
    std::fill(m->big.begin(), m->big.end(), 1.0f);
    evmpi_tensor_t b = evmpi_tensor_flat(m->big.data(), EVMPI_FLOAT32, (int64_t)m->big.size());
    rc = evmpi_allreduce(m->pg, &b, EVMPI_SUM, &w);
  }
  }
  if (rc != EVMPI_OK) {
    m->wrong++;
    m->done = m->n;
    return;
  }
  evmpi_work_on_complete(w, mixed_cb, m);
}

TEST_F(LoopCollectives, RanksThatChooseDifferentlyAgree) {
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = make_group(base, MPI_COMM_WORLD, evmpi_test_world_rank() % 2 == 0);
  ASSERT_NE(pg, nullptr);
  Mixed m;
  m.pg = pg;
  m.n = 400;
  m.big.assign(1 << 18, 0.0f); // 1 MiB
  mixed_submit(&m);
  EXPECT_TRUE(evmpi_test_run_until(base, [](void *a) {
    auto *x = static_cast<Mixed *>(a);
    return x->done >= x->n;
  }, &m, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(m.done, m.n);
  EXPECT_EQ(m.wrong, 0);
  evmpi_pg_destroy(pg);
  event_base_free(base);
}

// A peer that is late to a link must not hold the loop thread: the
// collective goes to the worker with its gate posted, and the loop's own
// timer goes on firing while the peer sleeps.
struct Ticks {
  int n = 0;
};
void tick_cb(evutil_socket_t, short, void *arg) { static_cast<Ticks *>(arg)->n++; }

TEST_F(LoopCollectives, ALatePeerSendsTheCollectiveToTheWorker) {
  if (evmpi_test_world_size() < 2)
    GTEST_SKIP() << "needs a peer to be late";
  struct event_base *base = event_base_new();
  size_t skip = timeline.size();
  evmpi_pg_t *pg = make_group(base, MPI_COMM_WORLD, 1);
  ASSERT_NE(pg, nullptr);
  Ticks ticks;
  struct event *timer = event_new(base, -1, EV_PERSIST, tick_cb, &ticks);
  struct timeval five_ms = {0, 5000};
  event_add(timer, &five_ms);
  Chain c;
  c.pg = pg;
  c.n = 8;
  c.late_rank = 1;
  c.late_link = 4; // rank 1's callback of link 3 sleeps before it submits link 4
  c.late_ms = 300;
  submit_link(&c);
  EXPECT_TRUE(evmpi_test_run_until(base, chain_over, &c, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(c.wrong, 0);
  event_free(timer);
  evmpi_pg_destroy(pg);
  event_base_free(base);
  auto threads = timeline.threads_since(skip, "collective");
  ASSERT_EQ(threads.size(), 8u) << timeline.file();
  if (evmpi_test_world_rank() != 1) {
    // Link 4 is seq 5. Held for 300 ms in MPI, the loop would tick about
    // once; waiting on the worker, about 60 times.
    EXPECT_EQ(threads[5], "worker");
    EXPECT_GE(ticks.n, 20);
  }
}

// A callback that waits for (or tests) the collective it has just
// submitted: the claim must go to the worker, or the wait never ends.
// What a callback under test has: its group, its allreduce's value, and
// whether it ran.
struct InCallback {
  evmpi_pg_t *pg = nullptr;
  int32_t v = 0;
  bool ran = false;
};

// In a callback: releases the barrier's work that ran it and submits an
// allreduce of 1 into c->v.
int allreduce_one_in(InCallback *c, evmpi_work_t *first, evmpi_work_t **w) {
  evmpi_work_release(first);
  c->v = 1;
  evmpi_tensor_t t = evmpi_tensor_flat(&c->v, EVMPI_INT32, 1);
  return evmpi_allreduce(c->pg, &t, EVMPI_SUM, w);
}

struct Waiter : InCallback {
  int mode = 0; // 0: evmpi_work_wait, 1: evmpi_work_is_completed, 2: a join's wait
  int status = -1000;
};

void waiter_cb(evmpi_work_t *first, void *arg) {
  auto *wt = static_cast<Waiter *>(arg);
  evmpi_work_t *w = nullptr;
  if (allreduce_one_in(wt, first, &w) != EVMPI_OK) {
    wt->ran = true;
    return;
  }
  if (wt->mode == 0) {
    wt->status = evmpi_work_wait(w, 10000);
  } else if (wt->mode == 1) {
    double until = evmpi_test_now_ms() + 10000;
    while (!evmpi_work_is_completed(w) && evmpi_test_now_ms() < until)
      usleep(100);
    wt->status = evmpi_work_is_completed(w) ? evmpi_work_status(w) : EVMPI_ERR_TIMEOUT;
  } else {
    evmpi_future_t *f = evmpi_work_get_future(w), *all = nullptr;
    if (evmpi_future_all(&f, 1, &all) == EVMPI_OK) {
      wt->status = evmpi_future_wait(all, 10000);
      evmpi_future_release(all);
    }
  }
  evmpi_work_release(w);
  wt->ran = true;
}

// Submits a barrier whose callback is cb(arg), and runs the loop until
// *ran: the callback under test runs on the loop thread, in a dispatch.
bool run_after_barrier(struct event_base *base, evmpi_pg_t *pg, evmpi_work_cb cb, void *arg,
                       bool *ran) {
  evmpi_work_t *first = nullptr;
  if (evmpi_barrier(pg, &first) != EVMPI_OK || evmpi_work_on_complete(first, cb, arg) != EVMPI_OK)
    return false;
  return evmpi_test_run_until(base, [](void *a) { return *static_cast<bool *>(a); }, ran,
                              EVMPI_TEST_TIMEOUT_MS);
}

TEST_F(LoopCollectives, ACallbackThatWaitsForItsOwnCollectiveIsNotLeftWaiting) {
  for (int mode = 0; mode < 3; mode++) {
    struct event_base *base = event_base_new();
    evmpi_pg_t *pg = make_group(base, MPI_COMM_WORLD, 1);
    ASSERT_NE(pg, nullptr);
    Waiter wt;
    wt.pg = pg;
    wt.mode = mode;
    EXPECT_TRUE(run_after_barrier(base, pg, waiter_cb, &wt, &wt.ran)) << evmpi_last_error();
    EXPECT_EQ(wt.status, EVMPI_OK) << "mode " << mode << ": " << evmpi_strerror(wt.status);
    EXPECT_EQ(wt.v, evmpi_pg_size(pg)) << "mode " << mode;
    evmpi_pg_destroy(pg);
    event_base_free(base);
  }
}

// A callback that submits a collective and then destroys the group (or
// aborts that collective): destroy runs what is queued, an abort takes the
// claimed collective out before it starts, and the group goes on.
struct Closer : InCallback {
  bool abort_it = false;
  evmpi_work_t *w = nullptr;
  int abort_rc = -1000;
};

void closer_cb(evmpi_work_t *first, void *arg) {
  auto *c = static_cast<Closer *>(arg);
  if (allreduce_one_in(c, first, &c->w) == EVMPI_OK) {
    if (c->abort_it)
      c->abort_rc = evmpi_work_abort(c->w);
    else
      evmpi_pg_destroy(c->pg);
  }
  c->ran = true;
}

TEST_F(LoopCollectives, DestroyOrAbortRightAfterTheSubmission) {
  for (int abort_it = 0; abort_it < 2; abort_it++) {
    struct event_base *base = event_base_new();
    evmpi_pg_t *pg = make_group(base, MPI_COMM_WORLD, 1);
    ASSERT_NE(pg, nullptr);
    Closer c;
    c.pg = pg;
    c.abort_it = abort_it;
    EXPECT_TRUE(run_after_barrier(base, pg, closer_cb, &c, &c.ran)) << evmpi_last_error();
    ASSERT_NE(c.w, nullptr);
    if (abort_it) {
      EXPECT_EQ(c.abort_rc, EVMPI_OK) << evmpi_last_error();
      EXPECT_TRUE(evmpi_test_run_until_done(base, &c.w, 1, EVMPI_TEST_TIMEOUT_MS));
      EXPECT_EQ(evmpi_work_status(c.w), EVMPI_ERR_ABORTED);
      // The group goes on: the next collective (the worker's) is right.
      int32_t v = 2;
      evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_INT32, 1);
      evmpi_work_t *w = nullptr;
      ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK);
      EXPECT_EQ(evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
      EXPECT_EQ(v, 2 * evmpi_pg_size(pg));
      evmpi_work_release(w);
      evmpi_pg_destroy(pg);
    } else {
      // Destroy ran the queued collective before it returned.
      EXPECT_TRUE(evmpi_work_is_completed(c.w));
      EXPECT_EQ(evmpi_work_status(c.w), EVMPI_OK) << evmpi_work_error(c.w);
      EXPECT_EQ(c.v, evmpi_test_world_size());
    }
    evmpi_work_release(c.w);
    event_base_free(base);
  }
}

} // namespace

int main(int argc, char **argv) {
  int rc = evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE);
  timeline.remove();
  return rc;
}
