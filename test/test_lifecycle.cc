// test_lifecycle.cc: the lifecycle contract of include/evmpi.h under the
// interleavings that break it: destroy re-entered from the callbacks it
// delivers, joins whose groups die, receives that complete out of MPI's
// matching order, timeouts that must bound destroy and must not reach back
// to a running collective, and randomised submit/abort/release/destroy
// from several threads. Every wait is bounded; a hang turns into a failure
// that says what was left.
#include "harness.h"

#include <event2/event.h>
#include <mpi.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

class Lifecycle : public MpiTest {};

// Runs fn on a thread of its own and fails (then ends the process, which
// a deadlock leaves no other way out of) when it has not returned within
// ms: a hang becomes a failure that names what hung.
void run_bounded(const char *what, int ms, const std::function<void()> &fn) {
  std::atomic<bool> done{false};
  std::thread t([&] {
    fn();
    done = true;
  });
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!done && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (!done) {
    std::fprintf(stderr, "[rank %d] FAIL: %s did not return within %d ms (deadlock)\n",
                 evmpi_test_world_rank(), what, ms);
    std::fflush(stderr);
    std::_Exit(3);
  }
  t.join();
}

int world_rank() { return evmpi_test_world_rank(); }
int world_size() { return evmpi_test_world_size(); }

// A receive nobody sends to (tag 999 is used by no test): it stays pending
// until destroy cancels it.
evmpi_work_t *unmatched_recv(evmpi_pg_t *pg, int32_t *buf) {
  evmpi_tensor_t t = evmpi_tensor_flat(buf, EVMPI_INT32, 1);
  evmpi_work_t *w = nullptr;
  EXPECT_EQ(evmpi_recv(pg, &t, evmpi_pg_rank(pg), 999, &w), EVMPI_OK) << evmpi_last_error();
  return w;
}

// ---- 1. destroy re-entered from the callbacks destroy delivers ---------------

struct Reenter {
  evmpi_pg_t *pg = nullptr;
  std::atomic<int> calls{0};
  std::atomic<int> status{1};
  std::atomic<int> set_timeout_rc{1};
  std::atomic<int> send_rc{1};
  pthread_t thread{};
};

void destroy_from_cb(evmpi_work_t *w, void *arg) {
  auto *r = static_cast<Reenter *>(arg);
  r->status = evmpi_work_status(w);
  r->thread = pthread_self();
  // What a service does on an error: give up on the group, here and now.
  evmpi_pg_destroy(r->pg);
  // The group is being torn down: these must be refused, not crash.
  r->set_timeout_rc = evmpi_pg_set_timeout(r->pg, 100);
  int32_t x = 0;
  evmpi_tensor_t t = evmpi_tensor_flat(&x, EVMPI_INT32, 1);
  evmpi_work_t *s = nullptr;
  r->send_rc = evmpi_send(r->pg, &t, 0, 1, &s);
  evmpi_work_release(s);
  r->calls++;
}

TEST_F(Lifecycle, DestroyReenteredFromALeftoverCallbackUserBase) {
  struct event_base *base = event_base_new();
  Reenter r;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &r.pg), EVMPI_OK);
  int32_t buf = 0;
  evmpi_work_t *w = unmatched_recv(r.pg, &buf);
  ASSERT_NE(w, nullptr);
  ASSERT_EQ(evmpi_work_on_complete(w, destroy_from_cb, &r), EVMPI_OK);
  pthread_t me = pthread_self();
  // Destroy cancels the receive and delivers its callback on this thread;
  // the callback destroys the group again.
  evmpi_pg_destroy(r.pg);
  EXPECT_EQ(r.calls.load(), 1);
  EXPECT_EQ(r.status.load(), EVMPI_ERR_ABORTED);
  EXPECT_TRUE(pthread_equal(r.thread, me));
  EXPECT_EQ(r.set_timeout_rc.load(), EVMPI_ERR_ABORTED);
  EXPECT_EQ(r.send_rc.load(), EVMPI_ERR_ABORTED);
  EXPECT_EQ(evmpi_work_status(w), EVMPI_ERR_ABORTED);
  evmpi_work_release(w);
  event_base_free(base);
}

TEST_F(Lifecycle, DestroyReenteredFromALeftoverCallbackNullBase) {
  Reenter r;
  ASSERT_EQ(evmpi_pg_create(nullptr, nullptr, 0, &r.pg), EVMPI_OK);
  int32_t buf = 0;
  evmpi_work_t *w = unmatched_recv(r.pg, &buf);
  ASSERT_NE(w, nullptr);
  ASSERT_EQ(evmpi_work_on_complete(w, destroy_from_cb, &r), EVMPI_OK);
  // The group's own loop thread delivers the cancelled receive, and its
  // callback destroys the group while this thread's destroy joins it.
  run_bounded("evmpi_pg_destroy (NULL base, re-entered)", 20000,
              [&] { evmpi_pg_destroy(r.pg); });
  EXPECT_EQ(r.calls.load(), 1);
  EXPECT_EQ(r.status.load(), EVMPI_ERR_ABORTED);
  EXPECT_EQ(r.set_timeout_rc.load(), EVMPI_ERR_ABORTED);
  EXPECT_EQ(r.send_rc.load(), EVMPI_ERR_ABORTED);
  evmpi_work_release(w);
  EXPECT_EQ(evmpi_pg_wait_destroyed(EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
}

// Destroy from a callback of a batch, with more of the group's callbacks
// queued behind it: the teardown waits for the batch, runs once, and the
// application learns when it is over.
struct Deferred {
  evmpi_pg_t *pg = nullptr;
  std::atomic<int> calls{0};
};

void deferred_destroy_cb(evmpi_work_t *w, void *arg) {
  auto *d = static_cast<Deferred *>(arg);
  evmpi_work_release(w);
  evmpi_pg_destroy(d->pg); // the first call defers; the others return
  d->calls++;
}

TEST_F(Lifecycle, DeferredDestroyEndsAndCanBeWaitedFor) {
  Deferred d;
  ASSERT_EQ(evmpi_pg_create(nullptr, nullptr, 0, &d.pg), EVMPI_OK);
  std::vector<int32_t> v(8, 1);
  std::vector<evmpi_work_t *> works;
  // All eight are submitted before any callback can destroy the group, so
  // that every rank runs the same collectives.
  for (int i = 0; i < 8; i++) {
    evmpi_tensor_t t = evmpi_tensor_flat(&v[i], EVMPI_INT32, 1);
    evmpi_work_t *w = nullptr;
    ASSERT_EQ(evmpi_allreduce(d.pg, &t, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
    works.push_back(w);
  }
  for (evmpi_work_t *w : works)
    ASSERT_EQ(evmpi_work_on_complete(w, deferred_destroy_cb, &d), EVMPI_OK);
  // The first callback defers the destroy; then the teardown can be waited for.
  for (int i = 0; i < EVMPI_TEST_TIMEOUT_MS && d.calls.load() == 0; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_GT(d.calls.load(), 0) << "no callback ran";
  ASSERT_EQ(evmpi_pg_wait_destroyed(EVMPI_TEST_TIMEOUT_MS), EVMPI_OK)
      << evmpi_last_error() << " (callbacks run: " << d.calls.load() << ")";
  // Every callback ran: those after the first destroy too (the group was
  // torn down only once its batch, or its destroy, had delivered them).
  EXPECT_EQ(d.calls.load(), 8);
  EXPECT_EQ(evmpi_pg_wait_destroyed(0), EVMPI_OK);
  EXPECT_EQ(evmpi_pg_wait_destroyed(-1), EVMPI_ERR_INVALID);
}

// ---- 6. a join whose first group dies ------------------------------------------

struct JoinSeen {
  volatile int calls = 0; // this thread's: the callback must run on it
  pthread_t thread{};
  int status = 1;
  evmpi_pg_t *destroy = nullptr; // destroyed from the join's callback
};

void join_cb(evmpi_future_t *f, void *arg) {
  auto *j = static_cast<JoinSeen *>(arg);
  j->thread = pthread_self();
  j->status = evmpi_future_status(f);
  if (j->destroy)
    evmpi_pg_destroy(j->destroy);
  j->calls++;
}

TEST_F(Lifecycle, JoinCallbackRunsOnALoopThreadWhenItsFirstGroupIsGone) {
  struct event_base *base = event_base_new();
  evmpi_pg_t *a = nullptr, *b = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &a), EVMPI_OK);
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &b), EVMPI_OK);
  int32_t abuf = 0, bin = 0, bout = 42;
  evmpi_work_t *ra = unmatched_recv(a, &abuf);
  int me = evmpi_pg_rank(b);
  evmpi_tensor_t ti = evmpi_tensor_flat(&bin, EVMPI_INT32, 1);
  evmpi_tensor_t to = evmpi_tensor_flat(&bout, EVMPI_INT32, 1);
  evmpi_work_t *rb = nullptr, *sb = nullptr;
  ASSERT_EQ(evmpi_recv(b, &ti, me, 5, &rb), EVMPI_OK) << evmpi_last_error();
  evmpi_future_t *kids[2] = {evmpi_work_get_future(ra), evmpi_work_get_future(rb)};
  evmpi_future_t *all = nullptr;
  ASSERT_EQ(evmpi_future_all(kids, 2, &all), EVMPI_OK);
  JoinSeen j;
  j.destroy = b;
  ASSERT_EQ(evmpi_future_then(all, join_cb, &j), EVMPI_OK);
  evmpi_pg_destroy(a); // ra completes aborted; the join waits for rb
  EXPECT_EQ(j.calls, 0);
  // B's receive completes on a library thread; the join's callback must
  // still come through a loop (B's, on this base), not run there.
  ASSERT_EQ(evmpi_send(b, &to, me, 5, &sb), EVMPI_OK) << evmpi_last_error();
  EXPECT_TRUE(evmpi_test_run_until_flag(base, &j.calls, EVMPI_TEST_TIMEOUT_MS))
      << "the join's callback never ran";
  EXPECT_EQ(j.calls, 1);
  EXPECT_TRUE(pthread_equal(j.thread, pthread_self())) << "the join's callback ran on a "
                                                          "library thread";
  EXPECT_EQ(j.status, EVMPI_ERR_ABORTED); // ra's
  EXPECT_EQ(bin, 42);
  // b was destroyed from the join's callback (deferred to the batch's end).
  EXPECT_EQ(evmpi_pg_wait_destroyed(EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
  evmpi_future_release(all);
  evmpi_work_release(ra);
  evmpi_work_release(rb);
  evmpi_work_release(sb);
  event_base_free(base);
}

// ---- 7. sends and receives complete in MPI's matching order ---------------------

struct Order {
  std::mutex mu;
  std::vector<int> seen;
};

struct OrderArg {
  Order *o;
  int id;
};

void order_cb(evmpi_work_t *w, void *arg) {
  auto *a = static_cast<OrderArg *>(arg);
  (void)w;
  std::lock_guard<std::mutex> g(a->o->mu);
  a->o->seen.push_back(a->id);
}

// Receives from this rank itself (so it runs at every size): n receives
// of one source and tag, posted in order, then n sends; sizes[i] is the
// i-th message's size. MPI matches receive i with message i; the callbacks
// must come in that order, receives and sends alike.
void check_matching_order(const std::vector<size_t> &sizes, int trials) {
  for (int trial = 0; trial < trials; trial++) {
    TestLoop l;
    ASSERT_NE(l.pg, nullptr);
    int me = evmpi_pg_rank(l.pg);
    size_t n = sizes.size(), max = 0;
    for (size_t s : sizes)
      max = s > max ? s : max;
    std::vector<std::vector<uint8_t>> in(n, std::vector<uint8_t>(max)), out(n);
    Order recvs, sends;
    std::vector<OrderArg> ra(n), sa(n);
    std::vector<evmpi_work_t *> works;
    for (size_t i = 0; i < n; i++) {
      evmpi_tensor_t t = evmpi_tensor_flat(in[i].data(), EVMPI_UINT8, (int64_t)max);
      evmpi_work_t *w = nullptr;
      ASSERT_EQ(evmpi_recv(l.pg, &t, me, 3, &w), EVMPI_OK) << evmpi_last_error();
      ra[i] = {&recvs, (int)i};
      ASSERT_EQ(evmpi_work_on_complete(w, order_cb, &ra[i]), EVMPI_OK);
      works.push_back(w);
    }
    for (size_t i = 0; i < n; i++) {
      out[i].assign(sizes[i], (uint8_t)(i + 1));
      evmpi_tensor_t t = evmpi_tensor_flat(out[i].data(), EVMPI_UINT8, (int64_t)sizes[i]);
      evmpi_work_t *w = nullptr;
      ASSERT_EQ(evmpi_send(l.pg, &t, me, 3, &w), EVMPI_OK) << evmpi_last_error();
      sa[i] = {&sends, (int)i};
      ASSERT_EQ(evmpi_work_on_complete(w, order_cb, &sa[i]), EVMPI_OK);
      works.push_back(w);
    }
    ASSERT_TRUE(evmpi_test_run_until_done(l.base, works.data(), (int)works.size(),
                                          EVMPI_TEST_TIMEOUT_MS));
    // The callbacks themselves: run the loop until all 2n have been seen.
    auto all_seen = [&] {
      std::lock_guard<std::mutex> g1(recvs.mu), g2(sends.mu);
      return recvs.seen.size() == n && sends.seen.size() == n;
    };
    for (int spin = 0; spin < 30000 && !all_seen(); spin++)
      evmpi_test_run_for(l.base, 1);
    std::vector<int> want(n);
    for (size_t i = 0; i < n; i++)
      want[i] = (int)i;
    EXPECT_EQ(recvs.seen, want) << "trial " << trial << ": receive callbacks out of matching order";
    EXPECT_EQ(sends.seen, want) << "trial " << trial << ": send callbacks out of issue order";
    for (size_t i = 0; i < n; i++) {
      EXPECT_EQ(evmpi_work_status(works[i]), EVMPI_OK) << evmpi_work_error(works[i]);
      EXPECT_EQ(in[i][0], (uint8_t)(i + 1)) << "receive " << i << " got another message";
      EXPECT_EQ(in[i][sizes[i] - 1], (uint8_t)(i + 1));
    }
    for (evmpi_work_t *w : works)
      evmpi_work_release(w);
  }
}

TEST_F(Lifecycle, SmallMessagesOfOneTagCompleteInMatchingOrder) {
  check_matching_order({8, 8}, 20);
  check_matching_order({4, 4, 4, 4, 4, 4, 4, 4}, 5);
}

// A large message matched first and a small one after it: the small one
// can complete inside MPI first (eager against rendezvous); its callback
// must still come second.
TEST_F(Lifecycle, ALargeMessageMatchedFirstCompletesFirst) {
  check_matching_order({4 << 20, 8}, 10);
  check_matching_order({1 << 20, 16, 2 << 20, 8}, 5);
}

// Many channels (tags) finishing in one test: each completed work is held
// until no older work of its channel is pending, and the poller keeps the
// held works' channels in a list that grows past its first 16. 100
// receives from this rank on 100 tags, then the 100 sends: all complete,
// each with its own message (a held work left behind by the list's growth
// once hung destroy, in test_p2p's stream behind parked receives).
TEST_F(Lifecycle, ManyChannelsFinishingTogetherAllComplete) {
  for (int trial = 0; trial < 5; trial++) {
    TestLoop l;
    ASSERT_NE(l.pg, nullptr);
    int me = evmpi_pg_rank(l.pg);
    const int n = 100;
    std::vector<int32_t> in(n, -1), out(n);
    std::vector<evmpi_work_t *> works;
    for (int i = 0; i < n; i++) {
      evmpi_tensor_t t = evmpi_tensor_flat(&in[i], EVMPI_INT32, 1);
      evmpi_work_t *w = nullptr;
      ASSERT_EQ(evmpi_recv(l.pg, &t, me, 200 + i, &w), EVMPI_OK) << evmpi_last_error();
      works.push_back(w);
    }
    for (int i = n - 1; i >= 0; i--) { // newest tag first: out of posting order
      out[i] = 1000 + i;
      evmpi_tensor_t t = evmpi_tensor_flat(&out[i], EVMPI_INT32, 1);
      evmpi_work_t *w = nullptr;
      ASSERT_EQ(evmpi_send(l.pg, &t, me, 200 + i, &w), EVMPI_OK) << evmpi_last_error();
      works.push_back(w);
    }
    ASSERT_TRUE(evmpi_test_run_until_done(l.base, works.data(), (int)works.size(),
                                          EVMPI_TEST_TIMEOUT_MS))
        << "trial " << trial;
    for (int i = 0; i < n; i++) {
      EXPECT_EQ(evmpi_work_status(works[i]), EVMPI_OK) << evmpi_work_error(works[i]);
      EXPECT_EQ(in[i], 1000 + i) << "receive of tag " << 200 + i;
    }
    for (evmpi_work_t *w : works)
      evmpi_work_release(w);
  }
}

// ---- 4, 5, 10a. timeouts --------------------------------------------------------

// Ranks other than 0 arrive late_ms late at the barrier.
void late_barrier(evmpi_pg_t *pg, int late_ms, evmpi_work_t **w) {
  if (evmpi_pg_rank(pg) != 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(late_ms));
  ASSERT_EQ(evmpi_barrier(pg, w), EVMPI_OK) << evmpi_last_error();
}

TEST_F(Lifecycle, DestroyIsBoundedByTheGroupTimeout) {
  if (world_size() < 2)
    GTEST_SKIP() << "needs a peer that arrives late";
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK);
  const int timeout = 300, late = 3000;
  ASSERT_EQ(evmpi_pg_set_timeout(pg, timeout), EVMPI_OK);
  evmpi_work_t *w = nullptr;
  if (world_rank() == 0) {
    ASSERT_EQ(evmpi_barrier(pg, &w), EVMPI_OK);
    // Destroy while the barrier waits for peers 3 s late: it must give up
    // after the timeout, not wait for them.
    double t0 = evmpi_test_now_ms();
    evmpi_pg_destroy(pg);
    double took = evmpi_test_now_ms() - t0;
    EXPECT_EQ(evmpi_work_status(w), EVMPI_ERR_TIMEOUT) << evmpi_work_error(w);
    const char *msg = evmpi_work_error(w);
    EXPECT_NE(msg ? std::strstr(msg, "barrier (#") : nullptr, nullptr) << (msg ? msg : "(none)");
    evmpi_work_record_t rec;
    ASSERT_EQ(evmpi_work_get_record(w, &rec), EVMPI_OK);
    // The promise is the bound; the margin is wide so that a loaded
    // machine does not turn it red, and far below the peers' lateness.
    EXPECT_LT(took, late - 500.0) << "destroy took " << took << " ms with a " << timeout
                                  << " ms timeout";
    EXPECT_LT((rec.finished_ns - rec.started_ns) / 1e6, late - 500.0);
  } else {
    late_barrier(pg, late, &w);
    EXPECT_TRUE(evmpi_test_run_until_done(base, &w, 1, EVMPI_TEST_TIMEOUT_MS));
    evmpi_pg_destroy(pg);
  }
  evmpi_work_release(w);
  event_base_free(base);
}

TEST_F(Lifecycle, DestroyGivesUpOnALargeUnmatchedSend) {
  if (world_size() < 2)
    GTEST_SKIP() << "needs a peer that receives late";
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK);
  const size_t n = 8 << 20;
  // The buffer of an abandoned send stays valid until MPI has delivered
  // it: this one lives to the end of the program.
  static std::vector<uint8_t> data;
  data.assign(n, 7);
  std::vector<uint8_t> in(n, 0);
  int rank = evmpi_pg_rank(pg);
  if (rank == 0) {
    ASSERT_EQ(evmpi_pg_set_timeout(pg, 300), EVMPI_OK);
    evmpi_tensor_t t = evmpi_tensor_flat(data.data(), EVMPI_UINT8, (int64_t)n);
    evmpi_work_t *s = nullptr;
    ASSERT_EQ(evmpi_send(pg, &t, 1, 77, &s), EVMPI_OK) << evmpi_last_error();
    double t0 = evmpi_test_now_ms();
    evmpi_pg_destroy(pg);
    double took = evmpi_test_now_ms() - t0;
    EXPECT_LT(took, 2500.0) << "destroy took " << took << " ms with a 300 ms timeout";
    EXPECT_EQ(evmpi_work_status(s), EVMPI_ERR_TIMEOUT) << evmpi_work_error(s);
    const char *msg = evmpi_work_error(s);
    EXPECT_NE(msg ? std::strstr(msg, "MPI may still deliver it") : nullptr, nullptr)
        << (msg ? msg : "(none)");
    EXPECT_NE(msg ? std::strstr(msg, "to rank 1, tag 77") : nullptr, nullptr)
        << (msg ? msg : "(none)");
    evmpi_work_release(s);
  } else if (rank == 1) {
    std::this_thread::sleep_for(std::chrono::milliseconds(3000));
    evmpi_tensor_t t = evmpi_tensor_flat(in.data(), EVMPI_UINT8, (int64_t)n);
    evmpi_work_t *r = nullptr;
    ASSERT_EQ(evmpi_recv(pg, &t, 0, 77, &r), EVMPI_OK) << evmpi_last_error();
    EXPECT_TRUE(evmpi_test_run_until_done(base, &r, 1, EVMPI_TEST_TIMEOUT_MS));
    // MPI delivered the send that rank 0 gave up on.
    EXPECT_EQ(evmpi_work_status(r), EVMPI_OK) << evmpi_work_error(r);
    EXPECT_EQ(in[0], 7);
    EXPECT_EQ(in[n - 1], 7);
    evmpi_work_release(r);
    evmpi_pg_destroy(pg);
  } else {
    evmpi_pg_destroy(pg);
  }
  event_base_free(base);
}

TEST_F(Lifecycle, SetTimeoutLeavesTheRunningCollectiveAlone) {
  if (world_size() < 2)
    GTEST_SKIP() << "needs a peer that arrives late";
  TestLoop l;
  ASSERT_NE(l.pg, nullptr);
  evmpi_work_t *w = nullptr;
  late_barrier(l.pg, 1500, &w);
  if (world_rank() == 0) {
    // The barrier has been running for a second: a 300 ms timeout set now
    // is for later collectives.
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    ASSERT_EQ(evmpi_pg_set_timeout(l.pg, 300), EVMPI_OK);
  }
  ASSERT_TRUE(evmpi_test_finish(l.base, &w, 1));
  // And it does apply to the next one: a peer 2 s late times it out.
  evmpi_work_t *w2 = nullptr;
  late_barrier(l.pg, 2000, &w2);
  ASSERT_TRUE(evmpi_test_run_until_done(l.base, &w2, 1, EVMPI_TEST_TIMEOUT_MS));
  if (world_rank() == 0) {
    EXPECT_EQ(evmpi_work_status(w2), EVMPI_ERR_TIMEOUT) << evmpi_work_error(w2);
    evmpi_work_record_t rec;
    ASSERT_EQ(evmpi_work_get_record(w2, &rec), EVMPI_OK);
    std::string want = "barrier (#" + std::to_string(rec.seq) + ") timed out after 300 ms";
    const char *msg = evmpi_work_error(w2);
    EXPECT_NE(msg ? std::strstr(msg, want.c_str()) : nullptr, nullptr) << (msg ? msg : "(none)");
  } else {
    EXPECT_EQ(evmpi_work_status(w2), EVMPI_OK) << evmpi_work_error(w2);
  }
  evmpi_work_release(w2);
}

// Many pooled collectives, each close to the timeout, with a jittery peer:
// none times out falsely (a reused work object is not taken for an older
// one), and the one that does overrun is named by its own number.
TEST_F(Lifecycle, JitteryPeersAndPooledWorksGiveNoFalseTimeouts) {
  if (world_size() < 2)
    GTEST_SKIP() << "needs a jittery peer";
  TestLoop l;
  ASSERT_NE(l.pg, nullptr);
  const int timeout = 1000;
  ASSERT_EQ(evmpi_pg_set_timeout(l.pg, timeout), EVMPI_OK);
  std::mt19937 rng(1234 + world_rank());
  for (int i = 0; i < 24; i++) {
    evmpi_work_t *w = nullptr;
    if (world_rank() != 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 150));
    ASSERT_EQ(evmpi_barrier(l.pg, &w), EVMPI_OK) << evmpi_last_error();
    ASSERT_TRUE(evmpi_test_run_until_done(l.base, &w, 1, EVMPI_TEST_TIMEOUT_MS));
    EXPECT_EQ(evmpi_work_status(w), EVMPI_OK) << "barrier " << i << ": " << evmpi_work_error(w);
    evmpi_work_release(w);
  }
  evmpi_work_t *late = nullptr;
  late_barrier(l.pg, 2500, &late);
  ASSERT_TRUE(evmpi_test_run_until_done(l.base, &late, 1, EVMPI_TEST_TIMEOUT_MS));
  if (world_rank() == 0) {
    evmpi_work_record_t rec;
    ASSERT_EQ(evmpi_work_get_record(late, &rec), EVMPI_OK);
    std::string want = "(#" + std::to_string(rec.seq) + ") timed out";
    const char *msg = evmpi_work_error(late);
    EXPECT_EQ(evmpi_work_status(late), EVMPI_ERR_TIMEOUT);
    EXPECT_NE(msg ? std::strstr(msg, want.c_str()) : nullptr, nullptr) << (msg ? msg : "(none)");
  }
  evmpi_work_release(late);
}

// ---- randomised interleavings ---------------------------------------------------

// One seed: a group over MPI_COMM_SELF (so every rank's interleaving is
// its own), threads that submit sends, receives and collectives, abort and
// release at random, callbacks that destroy, and a destroy at a random
// moment. Every call must return OK or a clear error; every work must
// complete; nothing may crash or hang.
struct Stress {
  evmpi_pg_t *pg = nullptr;
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::atomic<int> callbacks{0};
  std::atomic<int> destroy_from_cb{0};
  int destroy_cb_at = -1; // callback number that destroys the group
  std::mutex mu;
  std::string first_bad;
};

void stress_note(Stress *s, const std::string &what) {
  std::lock_guard<std::mutex> g(s->mu);
  if (s->first_bad.empty())
    s->first_bad = what;
  s->bad++;
}

void stress_cb(evmpi_work_t *w, void *arg) {
  auto *s = static_cast<Stress *>(arg);
  int st = evmpi_work_status(w);
  if (st != EVMPI_OK && st != EVMPI_ERR_ABORTED && st != EVMPI_ERR_TIMEOUT)
    stress_note(s, std::string("callback status ") + evmpi_strerror(st) + ": " +
                       (evmpi_work_error(w) ? evmpi_work_error(w) : ""));
  if (s->callbacks++ == s->destroy_cb_at) {
    s->destroy_from_cb++;
    evmpi_pg_destroy(s->pg);
  }
}

int32_t *stress_buffers(size_t n) {
  static std::mutex mu;
  static std::vector<std::unique_ptr<int32_t[]>> kept; // for the program's life
  std::lock_guard<std::mutex> g(mu);
  kept.emplace_back(new int32_t[n]());
  return kept.back().get();
}

void stress_thread(Stress *s, unsigned seed, evmpi_work_t *anchor) {
  (void)anchor; // held by the caller: it keeps the group's memory alive
  std::mt19937 rng(seed);
  std::vector<evmpi_work_t *> held;
  // A buffer of its own per operation, never freed: a released work goes on
  // (a receive until destroy cancels it, a send to this rank that destroy
  // gave up on may stay with MPI), and two operations must not share memory.
  int32_t *bufs = stress_buffers(400);
  int i = 0;
  while (!s->stop && i < 400) {
    int32_t *b = &bufs[i++];
    evmpi_tensor_t t = evmpi_tensor_flat(b, EVMPI_INT32, 1);
    evmpi_work_t *w = nullptr;
    int rc = EVMPI_OK;
    switch (rng() % 6) {
    case 0: rc = evmpi_send(s->pg, &t, 0, (int)(rng() % 3), &w); break;
    case 1: rc = evmpi_recv(s->pg, &t, 0, (int)(rng() % 3), &w); break;
    case 2: rc = evmpi_allreduce(s->pg, &t, EVMPI_SUM, &w); break;
    case 3: rc = evmpi_barrier(s->pg, &w); break;
    case 4:
      if (!held.empty()) {
        size_t k = rng() % held.size();
        int arc = evmpi_work_abort(held[k]);
        if (arc != EVMPI_OK && arc != EVMPI_ERR_STATE)
          stress_note(s, std::string("abort: ") + evmpi_strerror(arc));
      }
      break;
    case 5:
      if (!held.empty()) {
        size_t k = rng() % held.size();
        evmpi_work_release(held[k]);
        held.erase(held.begin() + (long)k);
      }
      break;
    }
    if (rc != EVMPI_OK && rc != EVMPI_ERR_ABORTED)
      stress_note(s, std::string("submit: ") + evmpi_strerror(rc) + ": " + evmpi_last_error());
    if (rc == EVMPI_OK && w) {
      if (rng() % 2)
        evmpi_work_on_complete(w, stress_cb, s);
      held.push_back(w);
    }
    if (rng() % 16 == 0)
      std::this_thread::yield();
  }
  // Every work completes: receives nobody matched are cancelled by destroy.
  for (evmpi_work_t *w : held) {
    int rc = evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS);
    if (rc == EVMPI_ERR_TIMEOUT && !evmpi_work_is_completed(w))
      stress_note(s, std::string("a work never completed: ") + evmpi_work_name(w));
    evmpi_work_release(w);
  }
}

// A send to the group's own rank that no receive of the group matched can
// never complete once destroy has begun: destroy, with no timeout, cancels
// it instead of waiting for it (MPICH does not buffer such a send and
// waited forever; left pending past its communicator it crashed a later
// MPI_Isend). Open MPI buffers the small one, which then simply succeeds.
TEST_F(Lifecycle, DestroyCancelsAnUnmatchedSendToItsOwnRank) {
  static int32_t small = 7;
  run_bounded("destroy with an unmatched 4 B send to itself", 20000, [&] {
    evmpi_pg_t *pg = nullptr;
    ASSERT_EQ(evmpi_pg_create_from_comm(nullptr, MPI_COMM_SELF, &pg), EVMPI_OK) << evmpi_last_error();
    evmpi_tensor_t t = evmpi_tensor_flat(&small, EVMPI_INT32, 1);
    evmpi_work_t *w = nullptr;
    ASSERT_EQ(evmpi_send(pg, &t, 0, 998, &w), EVMPI_OK) << evmpi_last_error();
    evmpi_pg_destroy(pg);
    ASSERT_EQ(evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS), evmpi_work_status(w));
    int st = evmpi_work_status(w);
    EXPECT_TRUE(st == EVMPI_OK || st == EVMPI_ERR_ABORTED) << evmpi_strerror(st);
    if (st == EVMPI_ERR_ABORTED) {
      ASSERT_NE(evmpi_work_error(w), nullptr);
      EXPECT_NE(std::strstr(evmpi_work_error(w), "send (#"), nullptr) << evmpi_work_error(w);
      EXPECT_NE(std::strstr(evmpi_work_error(w), "to rank 0, tag 998: cancelled by destroy"),
                nullptr) << evmpi_work_error(w);
    }
    evmpi_work_release(w);
  });
  // Many groups in a row, each destroyed with such a send left: the
  // communicators MPI reuses must not meet the old sends.
  run_bounded("40 groups destroyed with unmatched sends to themselves", 60000, [&] {
    for (int g = 0; g < 40; g++) {
      evmpi_pg_t *pg = nullptr;
      ASSERT_EQ(evmpi_pg_create_from_comm(nullptr, MPI_COMM_SELF, &pg), EVMPI_OK);
      ASSERT_EQ(evmpi_pg_set_timeout(pg, 2000), EVMPI_OK);
      evmpi_tensor_t t = evmpi_tensor_flat(&small, EVMPI_INT32, 1);
      evmpi_work_t *w[3] = {};
      int32_t in = 0;
      evmpi_tensor_t ti = evmpi_tensor_flat(&in, EVMPI_INT32, 1);
      ASSERT_EQ(evmpi_send(pg, &t, 0, 1, &w[0]), EVMPI_OK);
      ASSERT_EQ(evmpi_send(pg, &t, 0, 2, &w[1]), EVMPI_OK);
      ASSERT_EQ(evmpi_recv(pg, &ti, 0, 1, &w[2]), EVMPI_OK);
      ASSERT_EQ(evmpi_work_wait(w[2], EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
      EXPECT_EQ(in, 7);
      evmpi_pg_destroy(pg);
      for (evmpi_work_t *x : w) {
        EXPECT_NE(evmpi_work_wait(x, EVMPI_TEST_TIMEOUT_MS), EVMPI_ERR_TIMEOUT);
        evmpi_work_release(x);
      }
    }
  });
}

void stress_seed(unsigned seed, bool user_base) {
  Stress s;
  std::mt19937 rng(seed);
  struct event_base *base = user_base ? event_base_new() : nullptr;
  ASSERT_EQ(evmpi_pg_create_from_comm(base, MPI_COMM_SELF, &s.pg), EVMPI_OK) << evmpi_last_error();
  // A send to this rank whose receive destroy cancelled can never complete
  // (on an MPI that does not buffer it, MPICH's): the timeout bounds the
  // destroy that waits for it, and such sends fail with EVMPI_ERR_TIMEOUT.
  ASSERT_EQ(evmpi_pg_set_timeout(s.pg, 1000), EVMPI_OK);
  s.destroy_cb_at = (int)(rng() % 200);
  // Each thread holds a work of the group: a handle that keeps its memory,
  // so that submissions racing destroy are well defined.
  std::vector<evmpi_work_t *> anchors;
  for (int t = 0; t < 3; t++) {
    evmpi_work_t *a = nullptr;
    ASSERT_EQ(evmpi_barrier(s.pg, &a), EVMPI_OK);
    anchors.push_back(a);
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; t++)
    threads.emplace_back(stress_thread, &s, seed * 7 + (unsigned)t, anchors[(size_t)t]);
  int run_ms = (int)(rng() % 40);
  if (user_base) {
    evmpi_test_run_for(base, run_ms); // callbacks, and destroy from them, on this thread
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(run_ms));
  }
  evmpi_pg_destroy(s.pg); // a no-op when a callback destroyed it first
  s.stop = true;
  for (auto &t : threads)
    t.join();
  for (evmpi_work_t *a : anchors)
    evmpi_work_release(a);
  EXPECT_EQ(evmpi_pg_wait_destroyed(EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
  EXPECT_EQ(s.bad.load(), 0) << "seed " << seed << (user_base ? " (user base): " : " (NULL base): ")
                             << s.first_bad;
  if (base)
    event_base_free(base);
}

// Receives aborted while sends on other threads match them. Open MPI's
// ob1 takes a receive off its posted queue under the matching lock but
// marks it matched only after releasing the lock; an MPI_Cancel in between
// unlinked it a second time and completed it twice, which corrupted the
// queues (crashes in a later MPI_Irecv or MPI_Cancel) and could lose the
// message. Every message sent must be received exactly once, by a receive
// that either got it or was cancelled cleanly.
TEST_F(Lifecycle, AbortedReceivesRacingMatchingSendsLoseNothing) {
  run_bounded("receives aborted while sends match them", 60000, [&] {
    evmpi_pg_t *pg = nullptr;
    ASSERT_EQ(evmpi_pg_create_from_comm(nullptr, MPI_COMM_SELF, &pg), EVMPI_OK)
        << evmpi_last_error();
    const int kRounds = 4000;
    std::vector<int32_t> vals(kRounds);
    std::vector<std::atomic<int>> seen(kRounds);
    std::atomic<int> go{-1}; // the last round whose receive is posted
    std::atomic<int> bad{0};
    // Round i's message is sent as soon as the receiver has posted a
    // receive for it, while the receiver is about to abort that receive:
    // the match and the cancel meet.
    std::thread sender([&] {
      for (int i = 0; i < kRounds; i++) {
        while (go.load() < i)
          std::this_thread::yield();
        vals[(size_t)i] = i;
        evmpi_tensor_t t = evmpi_tensor_flat(&vals[(size_t)i], EVMPI_INT32, 1);
        evmpi_work_t *w = nullptr;
        if (evmpi_send(pg, &t, 0, 5, &w) != EVMPI_OK) {
          bad++;
          continue;
        }
        if (evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS) != EVMPI_OK)
          bad++;
        evmpi_work_release(w);
      }
    });
    // Every receive is aborted at a random moment half of the time; an
    // aborted one leaves its message to a later receive. After the last
    // round the rest are drained.
    std::mt19937 rng(7);
    int received = 0, aborted = 0, rounds = 0;
    int32_t in = -1;
    evmpi_tensor_t ti = evmpi_tensor_flat(&in, EVMPI_INT32, 1);
    while (received < kRounds) {
      evmpi_work_t *w = nullptr;
      in = -1;
      ASSERT_EQ(evmpi_recv(pg, &ti, 0, 5, &w), EVMPI_OK) << evmpi_last_error();
      int arc = EVMPI_ERR_STATE;
      if (rounds < kRounds) {
        go.store(rounds++);
        for (unsigned spin = rng() % 2000; spin > 0; spin--)
          std::atomic_signal_fence(std::memory_order_seq_cst); // a random moment
        if (rng() % 2)
          arc = evmpi_work_abort(w);
      }
      ASSERT_TRUE(arc == EVMPI_OK || arc == EVMPI_ERR_STATE) << evmpi_strerror(arc);
      ASSERT_NE(evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS), EVMPI_ERR_TIMEOUT)
          << "receive " << received << " never completed (a message was lost)";
      int st = evmpi_work_status(w);
      evmpi_work_release(w);
      if (st == EVMPI_ERR_ABORTED) {
        aborted++;
        continue;
      }
      ASSERT_EQ(st, EVMPI_OK);
      ASSERT_TRUE(in >= 0 && in < kRounds) << "received " << in;
      EXPECT_EQ(seen[(size_t)in]++, 0) << "message " << in << " received twice";
      received++;
    }
    sender.join();
    EXPECT_EQ(bad.load(), 0);
    EXPECT_GT(aborted, 0); // the abort path ran
    evmpi_pg_destroy(pg);
    EXPECT_EQ(evmpi_pg_wait_destroyed(EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
  });
}

TEST_F(Lifecycle, RandomisedInterleavingsNullBase) {
  for (unsigned seed = 1; seed <= 25; seed++)
    run_bounded("a stress seed (NULL base)", 30000, [&] { stress_seed(seed, false); });
}

TEST_F(Lifecycle, RandomisedInterleavingsUserBase) {
  for (unsigned seed = 101; seed <= 125; seed++)
    run_bounded("a stress seed (user base)", 30000, [&] { stress_seed(seed, true); });
}

} // namespace

int main(int argc, char **argv) {
  return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE);
}
