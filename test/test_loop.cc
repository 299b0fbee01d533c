// test_loop.cc: the loop-agnostic core. A group created for an external
// loop runs no callback until evmpi_pg_dispatch is called; its fd is
// readable (level-triggered) exactly while completions wait; dispatch is
// not re-entrant, and a destroy from a callback it runs tears the group
// down before it returns, after the detach callback; an edge-triggered
// epoll loop drives a chain of operations to the end; a group on a
// libevent base or on its own loop thread keeps its loop.
#include "harness.h"

#include <event2/event.h>
#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <thread>

namespace {

class Loop : public ExternalLoopTest {
protected:
  void SetUp() override {
    ExternalLoopTest::SetUp();
    if (HasFatalFailure())
      return;
    fd = evmpi_pg_fd(pg);
    ASSERT_GE(fd, 0) << evmpi_last_error();
  }
  bool Readable(int timeout_ms) {
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
  }
  int fd = -1;
};

void Count(evmpi_work_t *w, void *arg) {
  (void)w;
  ++*static_cast<int *>(arg);
}

TEST_F(Loop, CallbacksRunOnlyInDispatchAndTheFdIsLevelTriggered) {
  EXPECT_FALSE(Readable(0)) << "nothing has completed yet";
  EXPECT_EQ(evmpi_pg_dispatch(pg), 0);
  int32_t x = 1;
  evmpi_tensor_t t = evmpi_tensor_flat(&x, EVMPI_INT32, 1);
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK);
  static int ran; // static: a failed assertion leaves it to TearDown's destroy
  ran = 0;
  ASSERT_EQ(evmpi_work_on_complete(w, Count, &ran), EVMPI_OK);
  ASSERT_EQ(evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
  // Completed a moment before it is posted to the loop: the fd says when.
  EXPECT_TRUE(Readable(EVMPI_TEST_TIMEOUT_MS));
  EXPECT_TRUE(Readable(0)) << "level-triggered: still readable until dispatched";
  EXPECT_EQ(ran, 0) << "no callback runs outside dispatch";
  EXPECT_EQ(evmpi_pg_dispatch(pg), 1);
  EXPECT_EQ(ran, 1);
  EXPECT_EQ(x, evmpi_pg_size(pg));
  EXPECT_FALSE(Readable(0)) << "dispatched: nothing waits";
  // A callback registered on a completed work runs at the next dispatch.
  ASSERT_EQ(evmpi_work_on_complete(w, Count, &ran), EVMPI_OK);
  EXPECT_TRUE(Readable(EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(evmpi_pg_dispatch(pg), 1);
  EXPECT_EQ(ran, 2);
  evmpi_work_release(w);
}

struct Reenter {
  evmpi_pg_t *pg = nullptr;
  int rc = 1;
  std::string msg;
};

TEST_F(Loop, DispatchFromACallbackIsRefused) {
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_barrier(pg, &w), EVMPI_OK);
  static Reenter r; // static: see above
  r = Reenter{pg};
  ASSERT_EQ(evmpi_work_on_complete(w, [](evmpi_work_t *, void *arg) {
    auto *r = static_cast<Reenter *>(arg);
    r->rc = evmpi_pg_dispatch(r->pg);
    r->msg = evmpi_last_error();
  }, &r), EVMPI_OK);
  // A work is completed (wait returns) a moment before it is posted to the
  // loop: the fd says when.
  ASSERT_EQ(evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
  ASSERT_TRUE(Readable(EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(evmpi_pg_dispatch(pg), 1);
  EXPECT_EQ(r.rc, EVMPI_ERR_STATE);
  EXPECT_NE(r.msg.find("not re-entrant"), std::string::npos) << r.msg;
  evmpi_work_release(w);
}

struct Teardown {
  evmpi_pg_t *pg = nullptr;
  int detached = 0;
  int callbacks = 0;
  evmpi_pg_t *detached_pg = nullptr;
};

TEST_F(Loop, DestroyFromACallbackEndsInsideDispatchAfterTheDetach) {
  static Teardown d;
  d = Teardown{pg};
  ASSERT_EQ(evmpi_pg_set_detach(pg, [](evmpi_pg_t *g, void *arg) {
    auto *d = static_cast<Teardown *>(arg);
    d->detached++;
    d->detached_pg = g;
  }, &d), EVMPI_OK);
  EXPECT_EQ(evmpi_pg_set_detach(pg, [](evmpi_pg_t *, void *) {}, nullptr), EVMPI_ERR_STATE)
      << "one adapter at a time";
  evmpi_work_t *w[2] = {nullptr, nullptr};
  ASSERT_EQ(evmpi_barrier(pg, &w[0]), EVMPI_OK);
  ASSERT_EQ(evmpi_barrier(pg, &w[1]), EVMPI_OK);
  ASSERT_EQ(evmpi_work_on_complete(w[0], [](evmpi_work_t *, void *arg) {
    auto *d = static_cast<Teardown *>(arg);
    d->callbacks++;
    evmpi_pg_destroy(d->pg); // deferred to the end of the batch
    EXPECT_EQ(d->detached, 0);
  }, &d), EVMPI_OK);
  ASSERT_EQ(evmpi_work_on_complete(w[1], Count, &d.callbacks), EVMPI_OK);
  evmpi_pg_t *g = pg;
  pg = nullptr; // destroyed by the callback
  // Dispatch until the teardown (the second barrier may come in a later
  // batch: then it is delivered by the teardown itself).
  double deadline = evmpi_test_now_ms() + EVMPI_TEST_TIMEOUT_MS;
  while (d.detached == 0 && evmpi_test_now_ms() < deadline) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 100) == 1)
      ASSERT_GE(evmpi_pg_dispatch(g), 1);
  }
  EXPECT_EQ(d.detached, 1);
  EXPECT_EQ(d.detached_pg, g);
  EXPECT_EQ(d.callbacks, 2) << "every callback runs before the detach";
  evmpi_work_release(w[0]);
  evmpi_work_release(w[1]);
}

TEST_F(Loop, DestroyOutsideDispatchDeliversAndDetaches) {
  static int detached, ran;
  detached = ran = 0;
  ASSERT_EQ(evmpi_pg_set_detach(pg, [](evmpi_pg_t *, void *arg) { ++*static_cast<int *>(arg); },
                                &detached), EVMPI_OK);
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_barrier(pg, &w), EVMPI_OK);
  ASSERT_EQ(evmpi_work_on_complete(w, Count, &ran), EVMPI_OK);
  evmpi_pg_destroy(pg);
  pg = nullptr;
  EXPECT_EQ(ran, 1) << "destroy delivers what is owed";
  EXPECT_EQ(detached, 1);
  evmpi_work_release(w);
}

// EPOLLET: one notification per readiness; each dispatch that the loop
// makes must still get every completion, here a chain of 64 allreduces
// each submitted by the previous one's callback.
struct Chain {
  evmpi_pg_t *pg = nullptr;
  int32_t x = 0;
  int done = 0;
  int failed = 0;
};

void Next(evmpi_work_t *w, void *arg) {
  auto *c = static_cast<Chain *>(arg);
  if (!evmpi_work_is_success(w))
    c->failed++;
  evmpi_work_release(w);
  if (++c->done == 64)
    return;
  evmpi_tensor_t t = evmpi_tensor_flat(&c->x, EVMPI_INT32, 1);
  evmpi_work_t *n = nullptr;
  if (evmpi_allreduce(c->pg, &t, EVMPI_SUM, &n) != EVMPI_OK ||
      evmpi_work_on_complete(n, Next, c) != EVMPI_OK)
    c->failed++;
}

TEST_F(Loop, AnEdgeTriggeredEpollLoopGetsEveryCompletion) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(ep, 0);
  struct epoll_event ev = {};
  ev.events = EPOLLIN | EPOLLET;
  ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
  static Chain c;
  c = Chain{pg};
  evmpi_tensor_t t = evmpi_tensor_flat(&c.x, EVMPI_INT32, 1);
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK);
  ASSERT_EQ(evmpi_work_on_complete(w, Next, &c), EVMPI_OK);
  double deadline = evmpi_test_now_ms() + EVMPI_TEST_TIMEOUT_MS;
  while (c.done < 64 && !c.failed && evmpi_test_now_ms() < deadline) {
    struct epoll_event got;
    if (epoll_wait(ep, &got, 1, 100) == 1)
      ASSERT_GE(evmpi_pg_dispatch(pg), 0) << evmpi_last_error();
  }
  EXPECT_EQ(c.done, 64);
  EXPECT_EQ(c.failed, 0);
  close(ep);
}

TEST_F(Loop, ErrorsAndOtherLoops) {
  EXPECT_EQ(evmpi_pg_fd(nullptr), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_pg_dispatch(nullptr), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_pg_set_detach(nullptr, nullptr, nullptr), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_pg_fd(pg), fd) << "the same fd for the group's life";
  // A group on a libevent base: no detach of the application's, but it can
  // be dispatched on the base's thread (this one), without running the base.
  struct event_base *base = event_base_new();
  evmpi_pg_t *ev = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &ev), EVMPI_OK);
  EXPECT_EQ(evmpi_pg_set_detach(ev, [](evmpi_pg_t *, void *) {}, nullptr), EVMPI_ERR_STATE);
  EXPECT_GE(evmpi_pg_fd(ev), 0);
  evmpi_work_t *w = nullptr;
  int ran = 0;
  ASSERT_EQ(evmpi_barrier(ev, &w), EVMPI_OK);
  ASSERT_EQ(evmpi_work_on_complete(w, Count, &ran), EVMPI_OK);
  ASSERT_EQ(evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
  struct pollfd p = {evmpi_pg_fd(ev), POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, EVMPI_TEST_TIMEOUT_MS), 1);
  EXPECT_EQ(evmpi_pg_dispatch(ev), 1);
  EXPECT_EQ(ran, 1);
  evmpi_work_release(w);
  evmpi_pg_destroy(ev);
  event_base_free(base);
  // A group on its own loop thread: that thread dispatches, no other.
  evmpi_pg_t *own = nullptr;
  ASSERT_EQ(evmpi_pg_create(nullptr, nullptr, 0, &own), EVMPI_OK);
  EXPECT_EQ(evmpi_pg_dispatch(own), EVMPI_ERR_STATE);
  EXPECT_NE(std::string(evmpi_last_error()).find("own loop thread"), std::string::npos);
  std::atomic<int> own_ran{0};
  ASSERT_EQ(evmpi_barrier(own, &w), EVMPI_OK);
  ASSERT_EQ(evmpi_work_on_complete(w, [](evmpi_work_t *, void *arg) {
    static_cast<std::atomic<int> *>(arg)->fetch_add(1);
  }, &own_ran), EVMPI_OK);
  double deadline = evmpi_test_now_ms() + EVMPI_TEST_TIMEOUT_MS;
  while (own_ran.load() == 0 && evmpi_test_now_ms() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(own_ran.load(), 1) << "the own loop thread ran it";
  evmpi_work_release(w);
  evmpi_pg_destroy(own);
}

} // namespace

int main(int argc, char **argv) {
  return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE);
}
