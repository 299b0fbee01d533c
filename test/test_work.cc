// test_work.cc: works, futures and the group's lifecycle: callbacks that
// submit, release and destroy; a NULL base; waits with timeouts; joins;
// aborting queued work; destroy draining its queue; submitting from threads.
#include "harness.h"

#include <event2/event.h>
#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

using Loop = TestLoop;

class Work : public MpiTest {};

evmpi_work_t *allreduce_one(evmpi_pg_t *pg, int32_t *v) {
  evmpi_tensor_t t = evmpi_tensor_flat(v, EVMPI_INT32, 1);
  evmpi_work_t *w = nullptr;
  EXPECT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
  return w;
}

// ---- callbacks -------------------------------------------------------------

struct Chain {
  evmpi_pg_t *pg;
  int32_t values[5];
  int step = 0;
  bool wrong_thread = false;
  pthread_t loop;
};

void chain_cb(evmpi_work_t *w, void *arg) {
  auto *c = static_cast<Chain *>(arg);
  if (!pthread_equal(pthread_self(), c->loop))
    c->wrong_thread = true;
  EXPECT_EQ(evmpi_work_status(w), EVMPI_OK);
  evmpi_work_release(w); // a callback may release its own work
  if (++c->step < 5) {   // and submit new work
    evmpi_work_t *next = allreduce_one(c->pg, &c->values[c->step]);
    ASSERT_NE(next, nullptr);
    EXPECT_EQ(evmpi_work_on_complete(next, chain_cb, c), EVMPI_OK);
  }
}

TEST_F(Work, CallbackReleasesItsWorkAndSubmitsMore) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  Chain c;
  c.pg = l.pg;
  c.loop = pthread_self();
  for (int32_t &v : c.values)
    v = 1;
  evmpi_work_t *w = allreduce_one(l.pg, &c.values[0]);
  ASSERT_EQ(evmpi_work_on_complete(w, chain_cb, &c), EVMPI_OK);
  ASSERT_TRUE(evmpi_test_run_until(
      l.base, [](void *a) { return static_cast<Chain *>(a)->step == 5; }, &c,
      EVMPI_TEST_TIMEOUT_MS));
  EXPECT_FALSE(c.wrong_thread);
  for (int32_t v : c.values)
    EXPECT_EQ(v, evmpi_pg_size(l.pg));
}

// A future's first callback lives in the future itself, later ones are
// allocated: every one runs once, in registration order, including one
// registered from inside a running callback; and a work reused from the
// library's free list starts clean (no callbacks, status or result of the
// work it was before).
struct Order {
  std::vector<int> seen;
  evmpi_work_t *work = nullptr;
};

void order_cb(evmpi_work_t *w, void *arg);

void order_cb_1(evmpi_work_t *w, void *arg) {
  auto *o = static_cast<Order *>(arg);
  o->seen.push_back(1);
  // registered while the future's callbacks run: runs after the others
  EXPECT_EQ(evmpi_work_on_complete(w, order_cb, o), EVMPI_OK);
}
void order_cb_2(evmpi_work_t *, void *arg) { static_cast<Order *>(arg)->seen.push_back(2); }
void order_fut_3(evmpi_future_t *, void *arg) { static_cast<Order *>(arg)->seen.push_back(3); }
void order_cb(evmpi_work_t *, void *arg) { static_cast<Order *>(arg)->seen.push_back(4); }
void order_count_cb(evmpi_work_t *, void *arg) { ++*static_cast<int *>(arg); }

TEST_F(Work, CallbacksRunInOrderAndReusedWorksStartClean) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  for (int round = 0; round < 50; round++) {
    int32_t v = 1;
    Order o;
    evmpi_work_t *w = allreduce_one(l.pg, &v);
    ASSERT_NE(w, nullptr);
    EXPECT_STREQ(evmpi_work_name(w), "mpi:all_reduce");
    ASSERT_EQ(evmpi_work_on_complete(w, order_cb_1, &o), EVMPI_OK);
    ASSERT_EQ(evmpi_work_on_complete(w, order_cb_2, &o), EVMPI_OK);
    ASSERT_EQ(evmpi_future_then(evmpi_work_get_future(w), order_fut_3, &o), EVMPI_OK);
    ASSERT_TRUE(evmpi_test_run_until(
        l.base, [](void *a) { return static_cast<Order *>(a)->seen.size() == 4; }, &o,
        EVMPI_TEST_TIMEOUT_MS));
    EXPECT_EQ(o.seen, (std::vector<int>{1, 2, 3, 4}));
    EXPECT_EQ(v, evmpi_pg_size(l.pg));
    evmpi_work_release(w);

    // The next work most likely reuses w's memory: nothing of w shows.
    int32_t fresh = 1;
    evmpi_tensor_t t = evmpi_tensor_flat(&fresh, EVMPI_INT32, 1);
    evmpi_work_t *b = nullptr;
    ASSERT_EQ(evmpi_broadcast(l.pg, &t, 0, &b), EVMPI_OK);
    EXPECT_STREQ(evmpi_work_name(b), "mpi:broadcast");
    int calls = 0;
    ASSERT_EQ(evmpi_work_on_complete(b, order_count_cb, &calls), EVMPI_OK);
    ASSERT_TRUE(evmpi_test_run_until_flag(l.base, &calls, EVMPI_TEST_TIMEOUT_MS));
    EXPECT_EQ(evmpi_work_status(b), EVMPI_OK);
    evmpi_test_run_for(l.base, 1); // a stale callback would run now
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(o.seen.size(), 4u);
    evmpi_work_release(b);
  }
}

struct Destroyer {
  evmpi_pg_t *pg;
  int calls = 0;
  int later_status = 1;
};

void destroy_cb(evmpi_work_t *w, void *arg) {
  auto *d = static_cast<Destroyer *>(arg);
  d->calls++;
  evmpi_pg_destroy(d->pg); // destroys the group from inside its own callback
  // Submissions are refused from now on.
  evmpi_work_t *more = nullptr;
  int32_t v = 0;
  evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_INT32, 1);
  d->later_status = evmpi_allreduce(d->pg, &t, EVMPI_SUM, &more);
  EXPECT_EQ(more, nullptr);
  evmpi_work_release(w);
}

void count_cb(evmpi_work_t *, void *arg) { ++*static_cast<int *>(arg); }

TEST_F(Work, CallbackDestroysTheGroup) {
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK);
  int32_t a = 1, b = 1;
  Destroyer d{pg};
  int after = 0;
  evmpi_work_t *w1 = allreduce_one(pg, &a);
  evmpi_work_t *w2 = allreduce_one(pg, &b);
  ASSERT_EQ(evmpi_work_on_complete(w1, destroy_cb, &d), EVMPI_OK);
  ASSERT_EQ(evmpi_work_on_complete(w2, count_cb, &after), EVMPI_OK);
  ASSERT_TRUE(evmpi_test_run_until_flag(base, &d.calls, EVMPI_TEST_TIMEOUT_MS));
  // The second work's callback ran too (in the same batch or at teardown).
  EXPECT_EQ(after, 1);
  EXPECT_EQ(d.later_status, EVMPI_ERR_ABORTED);
  EXPECT_EQ(b, evmpi_test_world_size());
  // w2 outlives its group; callbacks added now run at once.
  int late = 0;
  EXPECT_EQ(evmpi_work_on_complete(w2, count_cb, &late), EVMPI_OK);
  EXPECT_EQ(late, 1);
  EXPECT_EQ(evmpi_work_status(w2), EVMPI_OK);
  evmpi_work_release(w2);
  event_base_free(base);
}

// ---- a NULL base: the group's own loop thread ---------------------------------

struct Seen {
  std::atomic<int> calls{0};
  std::atomic<bool> on_main{false};
  pthread_t main_thread;
};

void seen_cb(evmpi_work_t *w, void *arg) {
  auto *s = static_cast<Seen *>(arg);
  if (pthread_equal(pthread_self(), s->main_thread))
    s->on_main = true;
  s->calls++;
  evmpi_work_release(w);
}

bool wait_for(std::atomic<int> &n, int want) {
  double deadline = evmpi_test_now_ms() + EVMPI_TEST_TIMEOUT_MS;
  while (n.load() < want && evmpi_test_now_ms() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return n.load() >= want;
}

TEST_F(Work, NullBaseRunsCallbacksOnItsOwnThread) {
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create(nullptr, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  Seen s;
  s.main_thread = pthread_self();
  std::vector<int32_t> v(10, 2);
  for (int i = 0; i < 10; i++) {
    evmpi_work_t *w = allreduce_one(pg, &v[i]);
    ASSERT_EQ(evmpi_work_on_complete(w, seen_cb, &s), EVMPI_OK);
  }
  ASSERT_TRUE(wait_for(s.calls, 10));
  EXPECT_FALSE(s.on_main.load());
  for (int32_t x : v)
    EXPECT_EQ(x, 2 * evmpi_pg_size(pg));
  evmpi_pg_destroy(pg);
}

struct SelfDestroy {
  evmpi_pg_t *pg;
  std::atomic<int> done{0};
};

void self_destroy_cb(evmpi_work_t *w, void *arg) {
  auto *s = static_cast<SelfDestroy *>(arg);
  evmpi_work_release(w);
  evmpi_pg_destroy(s->pg); // on the group's own loop thread
  s->done++;
}

TEST_F(Work, NullBaseCallbackDestroysTheGroup) {
  SelfDestroy s;
  ASSERT_EQ(evmpi_pg_create(nullptr, nullptr, 0, &s.pg), EVMPI_OK);
  int32_t v = 1;
  evmpi_work_t *w = allreduce_one(s.pg, &v);
  ASSERT_EQ(evmpi_work_on_complete(w, self_destroy_cb, &s), EVMPI_OK);
  ASSERT_TRUE(wait_for(s.done, 1));
  EXPECT_EQ(v, evmpi_test_world_size());
  // The teardown goes on on the group's loop thread after the callback:
  // it ends, and can be waited for.
  EXPECT_EQ(evmpi_pg_wait_destroyed(EVMPI_TEST_TIMEOUT_MS), EVMPI_OK) << evmpi_last_error();
}

// ---- waits ----------------------------------------------------------------

TEST_F(Work, WaitHonoursItsTimeout) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  int32_t v = 0;
  evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_INT32, 1);
  evmpi_work_t *w;
  ASSERT_EQ(evmpi_recv_anysource(l.pg, &t, 12345, &w), EVMPI_OK);
  EXPECT_EQ(evmpi_work_wait(w, 0), EVMPI_ERR_TIMEOUT);
  double t0 = evmpi_test_now_ms();
  EXPECT_EQ(evmpi_work_wait(w, 100), EVMPI_ERR_TIMEOUT);
  double waited = evmpi_test_now_ms() - t0;
  // The timeout is the promise: not before 100 ms (a monotonic clock:
  // load only makes it later), and not an unbounded block (a bound that
  // no load reaches). The status above and the state below are the event.
  EXPECT_GE(waited, 99.0) << "evmpi_work_wait(w, 100) returned after " << waited << " ms";
  EXPECT_LT(waited, 20000.0) << "evmpi_work_wait(w, 100) returned after " << waited << " ms";
  EXPECT_FALSE(evmpi_work_is_completed(w));
  EXPECT_FALSE(evmpi_work_is_success(w));
  EXPECT_EQ(evmpi_work_error(w), nullptr);
  const evmpi_tensor_t *res = reinterpret_cast<const evmpi_tensor_t *>(1);
  EXPECT_EQ(evmpi_work_result(w, &res), 0u);
  EXPECT_EQ(res, nullptr);
  EXPECT_EQ(evmpi_future_wait(evmpi_work_get_future(w), 10), EVMPI_ERR_TIMEOUT);
  ASSERT_EQ(evmpi_work_abort(w), EVMPI_OK);
  EXPECT_EQ(evmpi_work_wait(w, -1), EVMPI_ERR_ABORTED);
  evmpi_work_release(w);
}

TEST_F(Work, BlockingWaitNeedsNoLoop) {
  Loop l; // the loop never runs in this test
  ASSERT_NE(l.pg, nullptr);
  int32_t v = 3;
  evmpi_work_t *w = allreduce_one(l.pg, &v);
  int calls = 0;
  ASSERT_EQ(evmpi_work_on_complete(w, count_cb, &calls), EVMPI_OK);
  EXPECT_EQ(evmpi_work_wait(w, -1), EVMPI_OK);
  EXPECT_EQ(v, 3 * evmpi_pg_size(l.pg));
  EXPECT_EQ(calls, 0); // callbacks wait for the loop
  ASSERT_TRUE(evmpi_test_run_until_flag(l.base, &calls, EVMPI_TEST_TIMEOUT_MS));
  evmpi_work_release(w);
}

// ---- futures --------------------------------------------------------------

struct FutureSeen {
  int calls = 0;
  size_t nvalue = 0;
  const void *data = nullptr;
};

void future_cb(evmpi_future_t *f, void *arg) {
  auto *s = static_cast<FutureSeen *>(arg);
  const evmpi_tensor_t *t = nullptr;
  s->nvalue = evmpi_future_value(f, &t);
  s->data = t ? t->data : nullptr;
  s->calls++;
}

TEST_F(Work, FutureThenValueAndRetain) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  int32_t v = 5;
  evmpi_work_t *w = allreduce_one(l.pg, &v);
  evmpi_future_t *f = evmpi_work_get_future(w);
  ASSERT_NE(f, nullptr);
  evmpi_future_retain(f);
  evmpi_work_release(w); // the retained future keeps the work alive
  FutureSeen s;
  ASSERT_EQ(evmpi_future_then(f, future_cb, &s), EVMPI_OK);
  ASSERT_TRUE(evmpi_test_run_until_flag(l.base, &s.calls, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_TRUE(evmpi_future_is_done(f));
  EXPECT_EQ(evmpi_future_status(f), EVMPI_OK);
  EXPECT_EQ(evmpi_future_error(f), nullptr);
  EXPECT_EQ(s.nvalue, 1u);
  EXPECT_EQ(s.data, &v);
  EXPECT_EQ(v, 5 * evmpi_pg_size(l.pg));
  // then() on a done future runs on the loop's next turn.
  FutureSeen again;
  ASSERT_EQ(evmpi_future_then(f, future_cb, &again), EVMPI_OK);
  EXPECT_EQ(again.calls, 0);
  ASSERT_TRUE(evmpi_test_run_until_flag(l.base, &again.calls, EVMPI_TEST_TIMEOUT_MS));
  evmpi_future_release(f);
}

TEST_F(Work, FutureAllWaitsForEveryOne) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  std::vector<int32_t> v(8, 1);
  std::vector<evmpi_work_t *> ws;
  std::vector<evmpi_future_t *> fs;
  for (int32_t &x : v) {
    ws.push_back(allreduce_one(l.pg, &x));
    fs.push_back(evmpi_work_get_future(ws.back()));
  }
  evmpi_future_t *all = nullptr;
  ASSERT_EQ(evmpi_future_all(fs.data(), fs.size(), &all), EVMPI_OK);
  FutureSeen s;
  ASSERT_EQ(evmpi_future_then(all, future_cb, &s), EVMPI_OK);
  ASSERT_TRUE(evmpi_test_run_until_flag(l.base, &s.calls, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(evmpi_future_status(all), EVMPI_OK);
  EXPECT_EQ(s.nvalue, 0u);
  for (size_t i = 0; i < ws.size(); i++) {
    EXPECT_TRUE(evmpi_work_is_completed(ws[i]));
    EXPECT_EQ(v[i], evmpi_pg_size(l.pg));
    evmpi_work_release(ws[i]);
  }
  EXPECT_EQ(evmpi_future_wait(all, 0), EVMPI_OK);
  evmpi_future_release(all);
}

TEST_F(Work, FutureAllTakesTheFirstFailure) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  int32_t a = 1, r = 0;
  evmpi_work_t *ok = allreduce_one(l.pg, &a);
  evmpi_tensor_t t = evmpi_tensor_flat(&r, EVMPI_INT32, 1);
  evmpi_work_t *rv;
  ASSERT_EQ(evmpi_recv_anysource(l.pg, &t, 777, &rv), EVMPI_OK);
  evmpi_future_t *fs[2] = {evmpi_work_get_future(ok), evmpi_work_get_future(rv)};
  evmpi_future_t *all;
  ASSERT_EQ(evmpi_future_all(fs, 2, &all), EVMPI_OK);
  EXPECT_EQ(evmpi_future_wait(all, 30), EVMPI_ERR_TIMEOUT);
  ASSERT_EQ(evmpi_work_abort(rv), EVMPI_OK);
  EXPECT_EQ(evmpi_future_wait(all, EVMPI_TEST_TIMEOUT_MS), EVMPI_ERR_ABORTED);
  ASSERT_NE(evmpi_future_error(all), nullptr);
  EXPECT_STREQ(evmpi_future_error(all), evmpi_work_error(rv));
  evmpi_future_release(all);
  evmpi_work_release(ok);
  evmpi_work_release(rv);
}

TEST_F(Work, FutureAllOfNothingIsDone) {
  evmpi_future_t *all = nullptr;
  ASSERT_EQ(evmpi_future_all(nullptr, 0, &all), EVMPI_OK);
  EXPECT_TRUE(evmpi_future_is_done(all));
  FutureSeen s;
  ASSERT_EQ(evmpi_future_then(all, future_cb, &s), EVMPI_OK);
  EXPECT_EQ(s.calls, 1); // no loop: runs on the registering thread
  evmpi_future_release(all);
}

// ---- abort and destroy ------------------------------------------------------

// Rank 0's worker is held in a broadcast whose root (rank 1) joins late;
// an allreduce queued behind it is aborted before it starts.
TEST_F(Work, AbortQueuedCollective) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  int rank = evmpi_pg_rank(l.pg), size = evmpi_pg_size(l.pg);
  if (size < 2)
    GTEST_SKIP() << "needs a peer to hold the worker";
  int32_t b = rank == 1 ? 99 : 0;
  evmpi_tensor_t tb = evmpi_tensor_flat(&b, EVMPI_INT32, 1);
  if (rank == 1) {
    int32_t go = 0;
    evmpi_tensor_t tg = evmpi_tensor_flat(&go, EVMPI_INT32, 1);
    evmpi_work_t *r;
    ASSERT_EQ(evmpi_recv(l.pg, &tg, 0, 1, &r), EVMPI_OK); // rank 0's "aborted" note
    ASSERT_EQ(evmpi_work_wait(r, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
    evmpi_work_release(r);
  }
  evmpi_work_t *bc;
  ASSERT_EQ(evmpi_broadcast(l.pg, &tb, 1, &bc), EVMPI_OK);
  if (rank == 0) {
    int32_t x = 1;
    evmpi_work_t *queued = allreduce_one(l.pg, &x);
    EXPECT_EQ(evmpi_work_abort(queued), EVMPI_OK) << evmpi_last_error();
    EXPECT_EQ(evmpi_work_status(queued), EVMPI_ERR_ABORTED);
    ASSERT_NE(evmpi_work_error(queued), nullptr);
    EXPECT_NE(std::strstr(evmpi_work_error(queued), "before it started"), nullptr);
    EXPECT_EQ(x, 1); // never ran
    int32_t note = 1;
    evmpi_tensor_t tn = evmpi_tensor_flat(&note, EVMPI_INT32, 1);
    evmpi_work_t *s;
    ASSERT_EQ(evmpi_send(l.pg, &tn, 1, 1, &s), EVMPI_OK);
    ASSERT_EQ(evmpi_work_wait(s, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
    evmpi_work_release(s);
    int calls = 0;
    ASSERT_EQ(evmpi_work_on_complete(queued, count_cb, &calls), EVMPI_OK);
    ASSERT_TRUE(evmpi_test_run_until_flag(l.base, &calls, EVMPI_TEST_TIMEOUT_MS));
    evmpi_work_release(queued);
  }
  ASSERT_TRUE(evmpi_test_run_until_done(l.base, &bc, 1, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(b, 99);
  EXPECT_EQ(evmpi_work_abort(bc), EVMPI_ERR_STATE); // completed: too late
  EXPECT_NE(std::strstr(evmpi_last_error(), "already started"), nullptr) << evmpi_last_error();
  evmpi_work_release(bc);
}

TEST_F(Work, DestroyDrainsQueueAndCancelsReceives) {
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK);
  std::vector<int32_t> v(100, 1);
  std::vector<evmpi_work_t *> ws;
  int calls = 0;
  for (int32_t &x : v) {
    ws.push_back(allreduce_one(pg, &x));
    evmpi_work_on_complete(ws.back(), count_cb, &calls);
  }
  int32_t r = 0;
  evmpi_tensor_t t = evmpi_tensor_flat(&r, EVMPI_INT32, 1);
  evmpi_work_t *rv;
  ASSERT_EQ(evmpi_recv_anysource(pg, &t, 4242, &rv), EVMPI_OK);
  evmpi_work_on_complete(rv, count_cb, &calls);
  int size = evmpi_pg_size(pg);
  evmpi_pg_destroy(pg); // the loop never ran: destroy delivers the callbacks
  EXPECT_EQ(calls, 101);
  for (size_t i = 0; i < ws.size(); i++) {
    EXPECT_EQ(evmpi_work_status(ws[i]), EVMPI_OK);
    EXPECT_EQ(v[i], size);
    evmpi_work_release(ws[i]);
  }
  EXPECT_EQ(evmpi_work_status(rv), EVMPI_ERR_ABORTED);
  evmpi_work_release(rv);
  event_base_free(base);
}

// Submitting is thread-safe: two threads queue allreduces on one group.
TEST_F(Work, SubmitFromSeveralThreads) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  const int per = 50;
  std::vector<int32_t> v(2 * per, 1);
  std::vector<evmpi_work_t *> ws(2 * per);
  auto submit = [&](int first) {
    for (int i = first; i < first + per; i++)
      ws[i] = allreduce_one(l.pg, &v[i]);
  };
  std::thread a(submit, 0), b(submit, per);
  a.join();
  b.join();
  ASSERT_TRUE(evmpi_test_run_until_done(l.base, ws.data(), 2 * per, EVMPI_TEST_TIMEOUT_MS));
  for (int i = 0; i < 2 * per; i++) {
    EXPECT_EQ(v[i], evmpi_pg_size(l.pg)); // same op everywhere: order-free result
    evmpi_work_release(ws[i]);
  }
}

} // namespace

int main(int argc, char **argv) { return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE); }
