// test_p2p.cc: sends and receives, a ring, any-source receives, receive
// cancellation, and MPI errors (truncation) delivered as work errors.
#include "harness.h"
#include "timeline_reader.h"

#include <sys/resource.h>

#include <event2/event.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using Loop = TestLoop;

TimelineReader timeline("p2p");

class P2P : public MpiTest {};

TEST_F(P2P, RingPassesValuesAround) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  int rank = evmpi_pg_rank(l.pg), size = evmpi_pg_size(l.pg);
  int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  std::vector<int32_t> out(100), in(100, -1);
  for (int i = 0; i < 100; i++)
    out[i] = rank * 1000 + i;
  evmpi_tensor_t to = evmpi_tensor_flat(out.data(), EVMPI_INT32, 100);
  evmpi_tensor_t ti = evmpi_tensor_flat(in.data(), EVMPI_INT32, 100);
  evmpi_work_t *w[2];
  ASSERT_EQ(evmpi_recv(l.pg, &ti, prev, 7, &w[0]), EVMPI_OK) << evmpi_last_error();
  ASSERT_EQ(evmpi_send(l.pg, &to, next, 7, &w[1]), EVMPI_OK) << evmpi_last_error();
  EXPECT_STREQ(evmpi_work_name(w[0]), "mpi:recv");
  EXPECT_STREQ(evmpi_work_name(w[1]), "mpi:send");
  ASSERT_TRUE(evmpi_test_run_until_done(l.base, w, 2, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(evmpi_work_status(w[0]), EVMPI_OK) << evmpi_work_error(w[0]);
  EXPECT_EQ(evmpi_work_status(w[1]), EVMPI_OK) << evmpi_work_error(w[1]);
  EXPECT_EQ(evmpi_work_source_rank(w[0]), prev);
  EXPECT_EQ(evmpi_work_source_rank(w[1]), -1); // not a receive
  for (int i = 0; i < 100; i++)
    ASSERT_EQ(in[i], prev * 1000 + i);
  const evmpi_tensor_t *res;
  ASSERT_EQ(evmpi_work_result(w[0], &res), 1u);
  EXPECT_EQ(res->data, in.data());
  EXPECT_EQ(evmpi_work_result(w[1], &res), 0u);
  evmpi_work_release(w[0]);
  evmpi_work_release(w[1]);
}

struct Count {
  int done = 0;
};

void count_cb(evmpi_work_t *, void *arg) { static_cast<Count *>(arg)->done++; }

TEST_F(P2P, AnySourceReportsEverySender) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  int rank = evmpi_pg_rank(l.pg), size = evmpi_pg_size(l.pg);
  if (rank == 0) {
    int n = size - 1;
    std::vector<int32_t> bufs(n > 0 ? n : 1, -1);
    std::vector<evmpi_work_t *> ws(n);
    Count c;
    for (int i = 0; i < n; i++) {
      evmpi_tensor_t t = evmpi_tensor_flat(&bufs[i], EVMPI_INT32, 1);
      ASSERT_EQ(evmpi_recv_anysource(l.pg, &t, 3, &ws[i]), EVMPI_OK) << evmpi_last_error();
      EXPECT_STREQ(evmpi_work_name(ws[i]), "mpi:recvAnySource");
      ASSERT_EQ(evmpi_work_on_complete(ws[i], count_cb, &c), EVMPI_OK);
    }
    ASSERT_TRUE(evmpi_test_run_until_done(l.base, ws.data(), n, EVMPI_TEST_TIMEOUT_MS));
    // Every callback runs (completion is seen before the loop delivers).
    struct Want {
      Count *c;
      int n;
    } want{&c, n};
    ASSERT_TRUE(evmpi_test_run_until(
        l.base, [](void *a) { auto *w = static_cast<Want *>(a); return w->c->done == w->n; },
        &want, EVMPI_TEST_TIMEOUT_MS));
    std::set<int> sources;
    for (int i = 0; i < n; i++) {
      ASSERT_EQ(evmpi_work_status(ws[i]), EVMPI_OK) << evmpi_work_error(ws[i]);
      int src = evmpi_work_source_rank(ws[i]);
      EXPECT_EQ(bufs[i], src * 10) << "payload names its sender";
      sources.insert(src);
      evmpi_work_release(ws[i]);
    }
    EXPECT_EQ((int)sources.size(), n);
    if (n)
      EXPECT_EQ(*sources.begin(), 1);
  } else {
    int32_t v = rank * 10;
    evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_INT32, 1);
    evmpi_work_t *w;
    ASSERT_EQ(evmpi_send(l.pg, &t, 0, 3, &w), EVMPI_OK) << evmpi_last_error();
    ASSERT_EQ(evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK) << evmpi_work_error(w);
    evmpi_work_release(w);
  }
}

TEST_F(P2P, SendToSelf) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  int rank = evmpi_pg_rank(l.pg);
  double out = 3.5, in = 0;
  evmpi_tensor_t to = evmpi_tensor_flat(&out, EVMPI_FLOAT64, 1);
  evmpi_tensor_t ti = evmpi_tensor_flat(&in, EVMPI_FLOAT64, 1);
  evmpi_work_t *w[2];
  ASSERT_EQ(evmpi_send(l.pg, &to, rank, 11, &w[0]), EVMPI_OK);
  ASSERT_EQ(evmpi_recv(l.pg, &ti, rank, 11, &w[1]), EVMPI_OK);
  ASSERT_TRUE(evmpi_test_run_until_done(l.base, w, 2, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(in, 3.5);
  EXPECT_EQ(evmpi_work_source_rank(w[1]), rank);
  evmpi_work_release(w[0]);
  evmpi_work_release(w[1]);
}

// A receive that no message will ever match is cancelled: it completes with
// EVMPI_ERR_ABORTED and its callback runs; a second abort is too late.
TEST_F(P2P, AbortPendingReceive) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  int32_t v = 0;
  evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_INT32, 1);
  evmpi_work_t *w;
  ASSERT_EQ(evmpi_recv_anysource(l.pg, &t, 999, &w), EVMPI_OK);
  Count c;
  ASSERT_EQ(evmpi_work_on_complete(w, count_cb, &c), EVMPI_OK);
  EXPECT_EQ(evmpi_work_wait(w, 20), EVMPI_ERR_TIMEOUT); // nothing will come
  EXPECT_FALSE(evmpi_work_is_completed(w));
  EXPECT_EQ(evmpi_work_status(w), EVMPI_ERR_STATE);
  ASSERT_EQ(evmpi_work_abort(w), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(evmpi_work_wait(w, 0), EVMPI_ERR_ABORTED);
  EXPECT_NE(evmpi_work_error(w), nullptr);
  EXPECT_NE(std::strstr(evmpi_work_error(w), "cancelled"), nullptr) << evmpi_work_error(w);
  EXPECT_EQ(evmpi_work_abort(w), EVMPI_ERR_STATE);
  EXPECT_NE(std::strstr(evmpi_last_error(), "already completed"), nullptr) << evmpi_last_error();
  ASSERT_TRUE(evmpi_test_run_until_flag(l.base, &c.done, EVMPI_TEST_TIMEOUT_MS));
  evmpi_work_release(w);
}

TEST_F(P2P, AbortSendIsTooLate) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  int rank = evmpi_pg_rank(l.pg);
  int32_t v = 1, in = 0;
  evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_INT32, 1);
  evmpi_tensor_t ti = evmpi_tensor_flat(&in, EVMPI_INT32, 1);
  evmpi_work_t *w[2];
  ASSERT_EQ(evmpi_send(l.pg, &t, rank, 5, &w[0]), EVMPI_OK);
  EXPECT_EQ(evmpi_work_abort(w[0]), EVMPI_ERR_STATE);
  ASSERT_EQ(evmpi_recv(l.pg, &ti, rank, 5, &w[1]), EVMPI_OK);
  ASSERT_TRUE(evmpi_test_run_until_done(l.base, w, 2, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(in, 1);
  evmpi_work_release(w[0]);
  evmpi_work_release(w[1]);
}

// A message longer than the receive buffer is an MPI error (MPI_ERR_TRUNCATE),
// delivered to the work as a message, and the group goes on working.
TEST_F(P2P, TruncationIsAWorkError) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  int rank = evmpi_pg_rank(l.pg);
  int32_t out[4] = {1, 2, 3, 4}, in[2] = {0, 0};
  evmpi_tensor_t to = evmpi_tensor_flat(out, EVMPI_INT32, 4);
  evmpi_tensor_t ti = evmpi_tensor_flat(in, EVMPI_INT32, 2);
  evmpi_work_t *w[2];
  ASSERT_EQ(evmpi_send(l.pg, &to, rank, 9, &w[0]), EVMPI_OK);
  ASSERT_EQ(evmpi_recv(l.pg, &ti, rank, 9, &w[1]), EVMPI_OK);
  ASSERT_TRUE(evmpi_test_run_until_done(l.base, &w[1], 1, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(evmpi_work_status(w[1]), EVMPI_ERR_MPI);
  ASSERT_NE(evmpi_work_error(w[1]), nullptr);
  EXPECT_NE(std::strstr(evmpi_work_error(w[1]), "MPI_ERR_TRUNCATE"), nullptr)
      << evmpi_work_error(w[1]);
  EXPECT_NE(std::strstr(evmpi_work_error(w[1]), "recv"), nullptr) << evmpi_work_error(w[1]);
  EXPECT_FALSE(evmpi_work_is_success(w[1]));
  const evmpi_tensor_t *res;
  EXPECT_EQ(evmpi_work_result(w[1], &res), 0u);
  evmpi_work_wait(w[0], EVMPI_TEST_TIMEOUT_MS);
  evmpi_work_release(w[0]);
  evmpi_work_release(w[1]);
  // Still usable.
  int32_t x = 1;
  evmpi_tensor_t tx = evmpi_tensor_flat(&x, EVMPI_INT32, 1);
  evmpi_work_t *ar;
  ASSERT_EQ(evmpi_allreduce(l.pg, &tx, EVMPI_SUM, &ar), EVMPI_OK);
  ASSERT_EQ(evmpi_work_wait(ar, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
  EXPECT_EQ(x, evmpi_pg_size(l.pg));
  evmpi_work_release(ar);
}

// A peer that sends more than the receiver posted: MPI raises
// MPI_ERR_TRUNCATE for a message from another rank, through the test call
// of a named and of an any-source receive alike. On either MPI it reaches
// the work as a message, the job goes on, and so does the group.
TEST_F(P2P, TruncationByAnotherRankIsAWorkError) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  int rank = evmpi_pg_rank(l.pg), size = evmpi_pg_size(l.pg);
  if (size < 2)
    GTEST_SKIP() << "a peer needs two ranks";
  int32_t out[8] = {1, 2, 3, 4, 5, 6, 7, 8}, in[2][2] = {};
  if (rank == 1) {
    evmpi_tensor_t to = evmpi_tensor_flat(out, EVMPI_INT32, 8);
    evmpi_work_t *s[2];
    ASSERT_EQ(evmpi_send(l.pg, &to, 0, 21, &s[0]), EVMPI_OK);
    ASSERT_EQ(evmpi_send(l.pg, &to, 0, 22, &s[1]), EVMPI_OK);
    for (evmpi_work_t *w : s) {
      // The sender's side is MPI's to report: success, or an error as a value.
      int st = evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS);
      EXPECT_NE(st, EVMPI_ERR_TIMEOUT);
      evmpi_work_release(w);
    }
  } else if (rank == 0) {
    evmpi_tensor_t t0 = evmpi_tensor_flat(in[0], EVMPI_INT32, 2);
    evmpi_tensor_t t1 = evmpi_tensor_flat(in[1], EVMPI_INT32, 2);
    evmpi_work_t *r[2];
    ASSERT_EQ(evmpi_recv(l.pg, &t0, 1, 21, &r[0]), EVMPI_OK);
    ASSERT_EQ(evmpi_recv_anysource(l.pg, &t1, 22, &r[1]), EVMPI_OK);
    ASSERT_TRUE(evmpi_test_run_until_done(l.base, r, 2, EVMPI_TEST_TIMEOUT_MS));
    const char *what[2] = {"recv", "recv_anysource"};
    for (int i = 0; i < 2; i++) {
      EXPECT_EQ(evmpi_work_status(r[i]), EVMPI_ERR_MPI) << what[i];
      const char *e = evmpi_work_error(r[i]);
      ASSERT_NE(e, nullptr) << what[i];
      EXPECT_NE(std::strstr(e, "MPI_ERR_TRUNCATE"), nullptr) << e;
      EXPECT_NE(std::strstr(e, what[i]), nullptr) << e;
      evmpi_work_release(r[i]);
    }
  }
  int32_t x = 1;
  evmpi_tensor_t tx = evmpi_tensor_flat(&x, EVMPI_INT32, 1);
  evmpi_work_t *ar;
  ASSERT_EQ(evmpi_allreduce(l.pg, &tx, EVMPI_SUM, &ar), EVMPI_OK);
  ASSERT_EQ(evmpi_work_wait(ar, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
  EXPECT_EQ(x, size);
  evmpi_work_release(ar);
}

// A ping-pong driven from callbacks, where rank 1 holds every fourth reply
// back on a timer for longer than the loop thread polls after a delivery
// (0.2 ms): those replies are finished by the poller thread after the loop
// has stopped polling, the others by the loop thread itself. Every round
// trip must complete, in order, with the right value.
struct Pong {
  evmpi_pg_t *pg;
  struct event_base *base;
  struct event *delay = nullptr;
  int peer = 0, round = 0, rounds = 0;
  int32_t out = 0, in = -1;
  bool failed = false, done = false;
};

void pong_post(Pong *p);

void pong_send_now(evutil_socket_t, short, void *arg) {
  auto *p = static_cast<Pong *>(arg);
  evmpi_tensor_t t = evmpi_tensor_flat(&p->out, EVMPI_INT32, 1);
  evmpi_work_t *s = nullptr;
  if (evmpi_send(p->pg, &t, p->peer, 31, &s) != EVMPI_OK)
    p->failed = true;
  evmpi_work_release(s); // released at once: completes without a callback
  if (p->failed || (evmpi_pg_rank(p->pg) == 1 && p->round == p->rounds))
    p->done = true; // rank 1: the last reply is on its way
}

// Rank 0 sends 2r and gets 2r + 1 back in round r; rank 1 answers.
void pong_recv_cb(evmpi_work_t *w, void *arg) {
  auto *p = static_cast<Pong *>(arg);
  int rank = evmpi_pg_rank(p->pg);
  if (evmpi_work_status(w) != EVMPI_OK || p->in != 2 * p->round + (rank == 0 ? 1 : 0))
    p->failed = true;
  evmpi_work_release(w);
  if (p->failed) {
    p->done = true;
    return;
  }
  p->out = p->in + 1;
  p->round++;
  bool last = p->round == p->rounds;
  if (rank == 0) {
    if (last) {
      p->done = true;
      return;
    }
    pong_post(p);
    pong_send_now(-1, 0, p);
    return;
  }
  if (!last)
    pong_post(p);
  if (p->round % 4 == 0) {
    struct timeval tv = {0, 2000}; // 2 ms: well past the loop's polling window
    evtimer_add(p->delay, &tv);
  } else {
    pong_send_now(-1, 0, p);
  }
}

void pong_post(Pong *p) {
  evmpi_tensor_t t = evmpi_tensor_flat(&p->in, EVMPI_INT32, 1);
  evmpi_work_t *r = nullptr;
  if (evmpi_recv(p->pg, &t, p->peer, 31, &r) != EVMPI_OK ||
      evmpi_work_on_complete(r, pong_recv_cb, p) != EVMPI_OK)
    p->failed = true;
}

TEST_F(P2P, PingPongWithRepliesSlowerThanTheLoopPolls) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  int rank = evmpi_pg_rank(l.pg);
  if (evmpi_pg_size(l.pg) < 2)
    GTEST_SKIP() << "needs two ranks";
  if (rank > 1)
    return;
  Pong p;
  p.pg = l.pg;
  p.base = l.base;
  p.peer = 1 - rank;
  p.rounds = 40;
  p.delay = evtimer_new(l.base, pong_send_now, &p);
  ASSERT_NE(p.delay, nullptr);
  pong_post(&p);
  if (rank == 0) { // the first ping: value 0, answered with 1
    p.out = 0;
    pong_send_now(-1, 0, &p);
  }
  ASSERT_TRUE(evmpi_test_run_until(
      l.base, [](void *a) { return static_cast<Pong *>(a)->done; }, &p, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_FALSE(p.failed);
  EXPECT_EQ(p.round, p.rounds);
  event_free(p.delay); // rank 1 is done once its last reply was sent

}

// A receive completes while a long collective is still running on the
// worker: its completion is not held back until the collective ends.
TEST_F(P2P, ReceiveNotHeldBackByCollective) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  int rank = evmpi_pg_rank(l.pg), size = evmpi_pg_size(l.pg);
  if (size < 2)
    GTEST_SKIP() << "needs two ranks";
  // Ranks != 0 enter a barrier that rank 0 joins only after a message from
  // rank 1 has arrived and one has gone back: rank 1's send and receive
  // must complete while its worker is blocked in the barrier, or this hangs.
  int32_t v = 0;
  evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_INT32, 1);
  if (rank == 0) {
    evmpi_work_t *r;
    ASSERT_EQ(evmpi_recv(l.pg, &t, 1, 21, &r), EVMPI_OK);
    ASSERT_TRUE(evmpi_test_run_until_done(l.base, &r, 1, EVMPI_TEST_TIMEOUT_MS));
    EXPECT_EQ(v, 42);
    evmpi_work_t *s;
    v = 43;
    ASSERT_EQ(evmpi_send(l.pg, &t, 1, 22, &s), EVMPI_OK);
    evmpi_work_t *b;
    ASSERT_EQ(evmpi_barrier(l.pg, &b), EVMPI_OK);
    evmpi_work_t *all[2] = {s, b};
    ASSERT_TRUE(evmpi_test_run_until_done(l.base, all, 2, EVMPI_TEST_TIMEOUT_MS));
    evmpi_work_release(r);
    evmpi_work_release(s);
    evmpi_work_release(b);
  } else {
    evmpi_work_t *b;
    ASSERT_EQ(evmpi_barrier(l.pg, &b), EVMPI_OK);
    evmpi_work_t *r = nullptr, *s = nullptr;
    int32_t in = 0;
    evmpi_tensor_t ti = evmpi_tensor_flat(&in, EVMPI_INT32, 1);
    if (rank == 1) {
      v = 42;
      ASSERT_EQ(evmpi_send(l.pg, &t, 0, 21, &s), EVMPI_OK);
      ASSERT_EQ(evmpi_recv(l.pg, &ti, 0, 22, &r), EVMPI_OK);
      ASSERT_TRUE(evmpi_test_run_until_done(l.base, &r, 1, EVMPI_TEST_TIMEOUT_MS));
      EXPECT_EQ(in, 43);
    }
    ASSERT_TRUE(evmpi_test_run_until_done(l.base, &b, 1, EVMPI_TEST_TIMEOUT_MS));
    if (s) {
      evmpi_work_wait(s, EVMPI_TEST_TIMEOUT_MS);
      evmpi_work_release(s);
    }
    if (r)
      evmpi_work_release(r);
    evmpi_work_release(b);
  }
}

struct HoldProbe {
  struct event *timer = nullptr;
  double t_cb = 0, t_fire = 0;
  int fired = 0;
};

// How long the loop thread holds the loop after delivering a receive's
// callback while another receive is still pending, in a stream of
// completions (warm exchanges before it: with two, the loop thread polls
// for the whole EVMPI_LOOP_P2P_POLL_US; with none, the receive came alone,
// and it polls 200 us at most): a 1 ms timer added by that callback
// fires only once the loop thread stops polling, after
// min(EVMPI_LOOP_P2P_POLL_US, EVMPI_LOOP_HOLD_US). Each rank talks to
// itself. Returns the timer's delay in ms, or a negative value on failure.
double MeasureHoldMs(struct event_base *base, int warm_exchanges = 2) {
  evmpi_pg_t *pg = nullptr;
  EXPECT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  if (!pg)
    return -1;
  int me = evmpi_pg_rank(pg);
  int32_t idle = 0, one = 1, got = 0;
  evmpi_tensor_t tidle = evmpi_tensor_flat(&idle, EVMPI_INT32, 1);
  evmpi_tensor_t tone = evmpi_tensor_flat(&one, EVMPI_INT32, 1);
  evmpi_tensor_t tgot = evmpi_tensor_flat(&got, EVMPI_INT32, 1);
  HoldProbe probe;
  probe.timer = evtimer_new(base, [](evutil_socket_t, short, void *arg) {
    auto *p = static_cast<HoldProbe *>(arg);
    p->t_fire = evmpi_test_now_ms();
    p->fired = 1;
  }, &probe);
  // Each warm exchange's callbacks run before the next exchange starts:
  // the stream is what the loop thread's dispatches see, and an exchange
  // that completed before the loop turned would have its callbacks
  // delivered with the next one's, as one batch (seen as one completion).
  for (int warm = 0; warm < warm_exchanges; warm++) {
    evmpi_work_t *x[2] = {nullptr, nullptr};
    int ran = 0;
    EXPECT_EQ(evmpi_recv(pg, &tgot, me, 13, &x[0]), EVMPI_OK) << evmpi_last_error();
    EXPECT_EQ(evmpi_send(pg, &tone, me, 13, &x[1]), EVMPI_OK) << evmpi_last_error();
    for (evmpi_work_t *xw : x)
      if (xw)
        EXPECT_EQ(evmpi_work_on_complete(xw, [](evmpi_work_t *, void *arg) {
          ++*static_cast<int *>(arg);
        }, &ran), EVMPI_OK);
    EXPECT_TRUE(evmpi_test_run_until(base, [](void *a) { return *static_cast<int *>(a) == 2; },
                                     &ran, EVMPI_TEST_TIMEOUT_MS));
    evmpi_work_release(x[0]);
    evmpi_work_release(x[1]);
  }
  evmpi_work_t *pending = nullptr, *w[2] = {nullptr, nullptr};
  EXPECT_EQ(evmpi_recv(pg, &tidle, me, 11, &pending), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(evmpi_recv(pg, &tgot, me, 12, &w[0]), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(evmpi_send(pg, &tone, me, 12, &w[1]), EVMPI_OK) << evmpi_last_error();
  double delay = -1;
  if (pending && w[0] && w[1]) {
    EXPECT_EQ(evmpi_work_on_complete(w[0], [](evmpi_work_t *, void *arg) {
      auto *p = static_cast<HoldProbe *>(arg);
      p->t_cb = evmpi_test_now_ms();
      struct timeval ms = {0, 1000};
      evtimer_add(p->timer, &ms);
    }, &probe), EVMPI_OK);
    EXPECT_TRUE(evmpi_test_run_until_flag(base, &probe.fired, EVMPI_TEST_TIMEOUT_MS));
    EXPECT_EQ(got, 1);
    if (probe.fired)
      delay = probe.t_fire - probe.t_cb;
    // The pending receive gets its message; then everything is done.
    EXPECT_EQ(evmpi_send(pg, &tone, me, 11, &w[1]), EVMPI_OK) << evmpi_last_error();
    evmpi_work_t *rest[2] = {pending, w[1]};
    EXPECT_TRUE(evmpi_test_run_until_done(base, rest, 2, EVMPI_TEST_TIMEOUT_MS));
  }
  for (evmpi_work_t *x : {pending, w[0], w[1]})
    evmpi_work_release(x);
  evmpi_pg_destroy(pg);
  event_free(probe.timer);
  return delay;
}

// EVMPI_LOOP_P2P_POLL_US and EVMPI_LOOP_HOLD_US set how long the loop
// thread polls for sends and receives; bad values fail group creation,
// the extremes still deliver every message intact, and the values are
// applied, not only parsed: the hold they give shows in the loop's own
// timers (MeasureHoldMs), and each of the two limits the other.
TEST_F(P2P, LoopSettings) {
  struct event_base *base = event_base_new();
  const char *bad[][3] = {
      {"EVMPI_LOOP_P2P_POLL_US", "-1", "in 0..1000000"},
      {"EVMPI_LOOP_P2P_POLL_US", "2000000", "in 0..1000000"},
      {"EVMPI_LOOP_P2P_POLL_US", "10ms", "in 0..1000000"},
      {"EVMPI_LOOP_HOLD_US", "0", "in 1..1000000"},
      {"EVMPI_LOOP_HOLD_US", "x", "in 1..1000000"},
  };
  for (auto &c : bad) {
    setenv(c[0], c[1], 1);
    evmpi_pg_t *pg = nullptr;
    EXPECT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_ERR_INVALID) << c[0] << "=" << c[1];
    EXPECT_EQ(pg, nullptr);
    std::string want = std::string("pg_create: ") + c[0] + "=" + c[1] +
                       " is not a number of microseconds " + c[2];
    EXPECT_NE(strstr(evmpi_last_error(), want.c_str()), nullptr) << evmpi_last_error();
    unsetenv(c[0]);
  }
  const char *good[][2] = {{"0", "1"}, {"3000", "5000"}};
  for (auto &g : good) {
    setenv("EVMPI_LOOP_P2P_POLL_US", g[0], 1);
    setenv("EVMPI_LOOP_HOLD_US", g[1], 1);
    evmpi_pg_t *pg = nullptr;
    ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
    int rank = evmpi_pg_rank(pg), size = evmpi_pg_size(pg);
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    const size_t n = 64 * 1024; // 256 KiB: Open MPI's single-copy path
    std::vector<int32_t> out(n), in(n, -1);
    for (int round = 0; round < 5; round++) {
      for (size_t i = 0; i < n; i++)
        out[i] = (int32_t)(rank * 1000 + round + i);
      evmpi_tensor_t ts = evmpi_tensor_flat(out.data(), EVMPI_INT32, (int64_t)n);
      evmpi_tensor_t tr = evmpi_tensor_flat(in.data(), EVMPI_INT32, (int64_t)n);
      evmpi_work_t *w[2] = {nullptr, nullptr};
      ASSERT_EQ(evmpi_recv(pg, &tr, prev, 7, &w[0]), EVMPI_OK) << evmpi_last_error();
      ASSERT_EQ(evmpi_send(pg, &ts, next, 7, &w[1]), EVMPI_OK) << evmpi_last_error();
      ASSERT_TRUE(evmpi_test_finish(base, w, 2));
      for (size_t i = 0; i < n; i++)
        ASSERT_EQ(in[i], (int32_t)(prev * 1000 + round + i)) << "round " << round << " at " << i;
    }
    evmpi_pg_destroy(pg);
  }
  unsetenv("EVMPI_LOOP_P2P_POLL_US");
  unsetenv("EVMPI_LOOP_HOLD_US");
  double dflt = MeasureHoldMs(base); // 2000 us and 500 us: the timer is on time
  EXPECT_GE(dflt, 0.0);
  EXPECT_LT(dflt, 150.0) << "with the defaults";
  // A 1 s polling window, cut to 300 ms by the hold.
  setenv("EVMPI_LOOP_P2P_POLL_US", "1000000", 1);
  setenv("EVMPI_LOOP_HOLD_US", "300000", 1);
  double held = MeasureHoldMs(base);
  EXPECT_GE(held, 250.0) << "EVMPI_LOOP_P2P_POLL_US=1000000 EVMPI_LOOP_HOLD_US=300000";
  EXPECT_LT(held, 800.0) << "EVMPI_LOOP_P2P_POLL_US=1000000 EVMPI_LOOP_HOLD_US=300000";
  // A 600 ms polling window within a 1 s hold (the window is also what
  // the warm exchanges' gaps must stay within to make a stream: wide
  // enough for a loaded machine under a sanitizer).
  setenv("EVMPI_LOOP_P2P_POLL_US", "600000", 1);
  setenv("EVMPI_LOOP_HOLD_US", "1000000", 1);
  double polled = MeasureHoldMs(base);
  EXPECT_GE(polled, 500.0) << "EVMPI_LOOP_P2P_POLL_US=600000 EVMPI_LOOP_HOLD_US=1000000";
  EXPECT_LT(polled, 950.0) << "EVMPI_LOOP_P2P_POLL_US=600000 EVMPI_LOOP_HOLD_US=1000000";
  // A receive that comes alone, not in a stream: 200 us of polling at
  // most, whatever the window (a service whose messages come seldom does
  // not poll long after each).
  setenv("EVMPI_LOOP_P2P_POLL_US", "1000000", 1);
  setenv("EVMPI_LOOP_HOLD_US", "1000000", 1);
  double alone = MeasureHoldMs(base, 0);
  EXPECT_GE(alone, 0.0);
  EXPECT_LT(alone, 150.0) << "a lone receive, EVMPI_LOOP_P2P_POLL_US=1000000";
  unsetenv("EVMPI_LOOP_P2P_POLL_US");
  unsetenv("EVMPI_LOOP_HOLD_US");
  event_base_free(base);
}

// After a stream of messages ends with a receive still pending, the loop
// thread stops polling within the window: its CPU over the next 300 ms is
// that window's, not 300 ms (a dispatch that came back to poll a stream
// must not keep coming back once the stream is gone).
TEST_F(P2P, PollingEndsWithTheStream) {
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  int me = evmpi_pg_rank(pg);
  int32_t one = 1, got = 0, idle = 0;
  evmpi_tensor_t tone = evmpi_tensor_flat(&one, EVMPI_INT32, 1);
  evmpi_tensor_t tgot = evmpi_tensor_flat(&got, EVMPI_INT32, 1);
  evmpi_tensor_t tidle = evmpi_tensor_flat(&idle, EVMPI_INT32, 1);
  evmpi_work_t *pending = nullptr;
  ASSERT_EQ(evmpi_recv(pg, &tidle, me, 21, &pending), EVMPI_OK) << evmpi_last_error();
  for (int i = 0; i < 200; i++) { // a stream: each exchange right after the last
    evmpi_work_t *x[2] = {nullptr, nullptr};
    ASSERT_EQ(evmpi_recv(pg, &tgot, me, 20, &x[0]), EVMPI_OK) << evmpi_last_error();
    ASSERT_EQ(evmpi_send(pg, &tone, me, 20, &x[1]), EVMPI_OK) << evmpi_last_error();
    ASSERT_TRUE(evmpi_test_finish(base, x, 2));
  }
  struct rusage r0, r1;
  getrusage(RUSAGE_THREAD, &r0);
  evmpi_test_run_for(base, 300);
  getrusage(RUSAGE_THREAD, &r1);
  double cpu_ms = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) * 1e3 +
                  (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e3 +
                  (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e3 +
                  (double)(r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e3;
  EXPECT_LT(cpu_ms, 100.0) << "the loop thread's CPU over 300 ms after the stream ended";
  evmpi_work_t *rest[2] = {pending, nullptr};
  ASSERT_EQ(evmpi_send(pg, &tone, me, 21, &rest[1]), EVMPI_OK) << evmpi_last_error();
  EXPECT_TRUE(evmpi_test_finish(base, rest, 2));
  evmpi_pg_destroy(pg);
  event_base_free(base);
}

// A stream of sends and receives that outlasts many holds of the loop
// stays with the loop thread's tests: a dispatch that runs out of time
// comes back to poll on, also when its last test finished everything in
// flight and the callbacks that go on with the stream are still to run;
// and the poller, asleep meanwhile, does not wake at the end of a hold to
// take completions from it (each would be a handoff through the eventfd).
// The timeline says whose test saw each send and receive complete. Ranks
// ping-pong in pairs, a rank without a partner with itself.
int64_t monotonic_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts); // one host: the ranks share it
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct PingPong {
  evmpi_pg_t *pg = nullptr;
  int peer = 0, left = 0, failed = 0;
  int32_t out = 0, in = 0;
  // When left reaches at_left, one more message of extra_tag goes to the peer.
  int at_left = -1, extra_tag = 0;
  int32_t extra = 1;
};

void pingpong_send(PingPong *p);

void pingpong_cb(evmpi_work_t *w, void *arg) {
  auto *p = static_cast<PingPong *>(arg);
  if (evmpi_work_status(w) != EVMPI_OK)
    p->failed++;
  evmpi_work_release(w);
  if (--p->left > 0)
    pingpong_send(p);
}

void pingpong_send(PingPong *p) {
  if (p->left == p->at_left) {
    evmpi_tensor_t t = evmpi_tensor_flat(&p->extra, EVMPI_INT32, 1);
    evmpi_work_t *e = nullptr;
    if (evmpi_send(p->pg, &t, p->peer, p->extra_tag, &e) != EVMPI_OK)
      p->failed++;
    evmpi_work_release(e);
  }
  evmpi_tensor_t to = evmpi_tensor_flat(&p->out, EVMPI_INT32, 1);
  evmpi_tensor_t ti = evmpi_tensor_flat(&p->in, EVMPI_INT32, 1);
  evmpi_work_t *r = nullptr, *s = nullptr;
  if (evmpi_recv(p->pg, &ti, p->peer, 30, &r) != EVMPI_OK ||
      evmpi_send(p->pg, &to, p->peer, 30, &s) != EVMPI_OK) {
    p->failed++;
    p->left = 0;
    return;
  }
  evmpi_work_release(s);
  evmpi_work_on_complete(r, pingpong_cb, p);
}

// Runs n round trips with peer through the callbacks on base; expects each
// to have succeeded.
void run_pingpong(struct event_base *base, evmpi_pg_t *pg, int peer, int n) {
  PingPong p;
  p.pg = pg;
  p.peer = peer;
  p.left = n;
  pingpong_send(&p);
  EXPECT_TRUE(evmpi_test_run_until(base, [](void *a) {
    return static_cast<PingPong *>(a)->left <= 0;
  }, &p, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(p.failed, 0);
}

// A group on base over MPI_COMM_WORLD whose sends and receives go to the
// timeline, with a loop hold of hold_us (0: the default). The poller takes
// over when the loop thread has been away a polling window past its own:
// 100 ms, so that a loaded machine's preemptions (milliseconds) do not count.
void stream_group(struct event_base *base, int hold_us, evmpi_pg_t **pg) {
  evmpi_pg_options_t *o = nullptr;
  ASSERT_EQ(evmpi_pg_options_new(&o), EVMPI_OK);
  EXPECT_EQ(evmpi_pg_options_set_ignore_env(o, true), EVMPI_OK);
  if (hold_us > 0)
    EXPECT_EQ(evmpi_pg_options_set_loop_hold_us(o, hold_us), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(evmpi_pg_options_set_loop_p2p_poll_us(o, 100000), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(evmpi_pg_options_set_timeline(o, timeline.base()), EVMPI_OK);
  EXPECT_EQ(evmpi_pg_create_from_comm_with(base, MPI_COMM_WORLD, o, pg), EVMPI_OK)
      << evmpi_last_error();
  evmpi_pg_options_free(o);
  ASSERT_NE(*pg, nullptr);
}

TEST_F(P2P, AStreamOutlastingTheHoldStaysWithTheLoopThread) {
  struct event_base *base = event_base_new();
  size_t skip = timeline.size();
  evmpi_pg_t *pg = nullptr;
  ASSERT_NO_FATAL_FAILURE(stream_group(base, 50, &pg));
  int rank = evmpi_pg_rank(pg), size = evmpi_pg_size(pg);
  run_pingpong(base, pg, (rank ^ 1) < size ? rank ^ 1 : rank, 2000);
  evmpi_pg_destroy(pg); // flushes the timeline
  event_base_free(base);
  auto threads = timeline.threads_since(skip, "p2p");
  ASSERT_EQ(threads.size(), 4000u) << timeline.file();
  int by_poller = 0;
  for (auto &kv : threads)
    by_poller += kv.second == "poller";
  // One per hold was 200 to 850 here.
  EXPECT_LE(by_poller, 40) << "of 4000 sends and receives, seen complete by the poller";
}

// A stream behind receives left posted (a server's, or thousands of them)
// is still the loop thread's: past 128 pending requests its test looks at
// the oldest, the newest (the stream's) and a walk through the rest, so the
// stream's completions need no handoff from the poller, which sleeps, and
// a message for one in the middle is still seen meanwhile. 300 receives of
// tags 100-399 stay posted on every rank while it ping-pongs; halfway the
// peer sends tag 250. Before the loop thread looked past the oldest it saw
// none of the stream's completions.
TEST_F(P2P, AStreamBehindReceivesLeftPostedStaysWithTheLoopThread) {
  struct event_base *base = event_base_new();
  size_t skip = timeline.size();
  evmpi_pg_t *pg = nullptr;
  ASSERT_NO_FATAL_FAILURE(stream_group(base, 0, &pg));
  int rank = evmpi_pg_rank(pg), size = evmpi_pg_size(pg);
  int peer = (rank ^ 1) < size ? rank ^ 1 : rank;
  const int parked = 300, trips = 1000;
  std::vector<int32_t> bufs(parked);
  std::vector<evmpi_work_t *> left(parked, nullptr);
  for (int i = 0; i < parked; i++) {
    evmpi_tensor_t t = evmpi_tensor_flat(&bufs[i], EVMPI_INT32, 1);
    ASSERT_EQ(evmpi_recv(pg, &t, peer, 100 + i, &left[i]), EVMPI_OK) << evmpi_last_error();
  }
  const int middle = 150;
  PingPong p;
  p.pg = pg;
  p.peer = peer;
  p.left = trips;
  p.at_left = trips / 2;
  p.extra_tag = 100 + middle;
  pingpong_send(&p);
  EXPECT_TRUE(evmpi_test_run_until(base, [](void *a) {
    return static_cast<PingPong *>(a)->left <= 0;
  }, &p, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(p.failed, 0);
  EXPECT_EQ(evmpi_work_status(left[middle]), EVMPI_OK)
      << "the receive in the middle of the posted ones, matched halfway through the stream, was "
         "not seen complete by the end of its " << trips << " round trips";
  evmpi_pg_destroy(pg); // cancels the parked receives; flushes the timeline
  EXPECT_EQ(bufs[middle], 1);
  for (int i = 0; i < parked; i++) {
    if (i != middle)
      EXPECT_EQ(evmpi_work_status(left[i]), EVMPI_ERR_ABORTED) << "parked receive " << i;
    evmpi_work_release(left[i]);
  }
  event_base_free(base);
  auto threads = timeline.threads_since(skip, "p2p");
  ASSERT_EQ(threads.size(), (size_t)(parked + 1 + 2 * trips)) << timeline.file();
  EXPECT_EQ(threads[middle + 1], "loop") << "whose test saw the receive in the middle complete";
  int by_poller = 0;
  for (auto &kv : threads)
    by_poller += kv.first > (unsigned long long)parked && kv.second == "poller";
  EXPECT_LE(by_poller, 2 * trips / 10) << "of " << 2 * trips << " sends and receives behind "
                                       << parked << " posted ones, seen complete by the poller";
}

// Past 128 pending requests the poller, too, tests a window (the oldest,
// the newest and a walk through the rest) between its tests of them all:
// one of thousands each time cost a stream behind them most of its rate.
// Nothing runs the loop here while the messages come, so the poller's
// tests are the only ones. 300 receives of tags 100-399 stay posted and a
// stream of 400 on tag 50 is posted behind them: the window sees the
// newest of the stream complete before the older ones in the middle, and
// those must still finish first (MPI's matching order), callbacks in that
// order too; the message for tag 250, sent halfway, is seen. The stream
// comes in bursts of 8, so that the peer's poller tests while it comes.
struct Order {
  std::vector<int> seen;
};

TEST_F(P2P, ThePollersWindowKeepsMatchingOrderBehindManyPending) {
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create_from_comm(base, MPI_COMM_WORLD, &pg), EVMPI_OK) << evmpi_last_error();
  int rank = evmpi_pg_rank(pg), size = evmpi_pg_size(pg);
  int peer = (rank ^ 1) < size ? rank ^ 1 : rank;
  const int parked = 300, stream = 400, middle = 150;
  std::vector<int32_t> pbuf(parked, -1), sbuf(stream, -1), out(stream);
  std::vector<evmpi_work_t *> left(parked, nullptr), recvs(stream, nullptr),
      sends(stream, nullptr);
  for (int i = 0; i < parked; i++) {
    evmpi_tensor_t t = evmpi_tensor_flat(&pbuf[i], EVMPI_INT32, 1);
    ASSERT_EQ(evmpi_recv(pg, &t, peer, 100 + i, &left[i]), EVMPI_OK) << evmpi_last_error();
  }
  Order order;
  for (int i = 0; i < stream; i++) {
    evmpi_tensor_t t = evmpi_tensor_flat(&sbuf[i], EVMPI_INT32, 1);
    ASSERT_EQ(evmpi_recv(pg, &t, peer, 50, &recvs[i]), EVMPI_OK) << evmpi_last_error();
    ASSERT_EQ(evmpi_work_on_complete(recvs[i], [](evmpi_work_t *w, void *arg) {
      evmpi_work_record_t rec;
      evmpi_work_get_record(w, &rec);
      static_cast<Order *>(arg)->seen.push_back((int)rec.seq);
    }, &order), EVMPI_OK);
  }
  MPI_Barrier(MPI_COMM_WORLD); // the peer's receives are posted
  int32_t one = 7;
  evmpi_tensor_t tone = evmpi_tensor_flat(&one, EVMPI_INT32, 1);
  evmpi_work_t *extra = nullptr;
  for (int i = 0; i < stream; i++) {
    out[i] = i;
    evmpi_tensor_t t = evmpi_tensor_flat(&out[i], EVMPI_INT32, 1);
    ASSERT_EQ(evmpi_send(pg, &t, peer, 50, &sends[i]), EVMPI_OK) << evmpi_last_error();
    if (i % 8 == 7)
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    if (i == stream / 2)
      ASSERT_EQ(evmpi_send(pg, &tone, peer, 100 + middle, &extra), EVMPI_OK)
          << evmpi_last_error();
  }
  // Blocking waits: the loop does not run, the poller tests.
  EXPECT_EQ(evmpi_work_wait(recvs[stream - 1], EVMPI_TEST_TIMEOUT_MS), EVMPI_OK)
      << evmpi_work_error(recvs[stream - 1]);
  EXPECT_EQ(evmpi_work_wait(left[middle], EVMPI_TEST_TIMEOUT_MS), EVMPI_OK)
      << "the receive in the middle of the posted ones was not seen: "
      << evmpi_work_error(left[middle]);
  EXPECT_EQ(pbuf[middle], 7);
  int64_t last_finished = 0;
  for (int i = 0; i < stream; i++) {
    ASSERT_TRUE(evmpi_work_is_completed(recvs[i]))
        << "stream receive " << i << " is not complete while the last one is";
    EXPECT_EQ(evmpi_work_status(recvs[i]), EVMPI_OK) << evmpi_work_error(recvs[i]);
    EXPECT_EQ(sbuf[i], i) << "MPI matches a channel's receives in the order they were posted";
    evmpi_work_record_t rec;
    ASSERT_EQ(evmpi_work_get_record(recvs[i], &rec), EVMPI_OK);
    EXPECT_GE(rec.finished_ns, last_finished) << "stream receive " << i
                                              << " finished before an older one of its channel";
    last_finished = rec.finished_ns;
  }
  for (int i = 0; i < parked; i++)
    if (i != middle)
      EXPECT_FALSE(evmpi_work_is_completed(left[i])) << "parked receive " << i;
  ASSERT_TRUE(evmpi_test_run_until_done(base, sends.data(), stream, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(evmpi_work_wait(extra, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK) << evmpi_work_error(extra);
  ASSERT_TRUE(evmpi_test_run_until(base, [](void *a) {
    return static_cast<Order *>(a)->seen.size() == 400;
  }, &order, EVMPI_TEST_TIMEOUT_MS));
  for (int i = 0; i < stream; i++) {
    evmpi_work_record_t rec;
    evmpi_work_get_record(recvs[i], &rec);
    EXPECT_EQ(order.seen[i], (int)rec.seq) << "callback " << i << " ran out of issue order";
  }
  MPI_Barrier(MPI_COMM_WORLD); // both sides are done with the stream
  evmpi_pg_destroy(pg); // cancels the parked receives
  for (int i = 0; i < parked; i++) {
    if (i != middle)
      EXPECT_EQ(evmpi_work_status(left[i]), EVMPI_ERR_ABORTED) << "parked receive " << i;
    evmpi_work_release(left[i]);
  }
  for (int i = 0; i < stream; i++) {
    evmpi_work_release(recvs[i]);
    evmpi_work_release(sends[i]);
  }
  evmpi_work_release(extra);
  event_base_free(base);
}

// A stream that ends in a dispatch that came back for it (the hold ran
// out while it flowed) hands the poller back its tests: a send and
// receive submitted afterwards by another thread complete at once, not
// when the polling window the stream left ends (1 s here). The last
// dispatch delivered the stream's last callback and never polled, and
// only a dispatch that polled woke the poller.
TEST_F(P2P, AfterAStreamAnotherThreadsWorkIsNotLeftToTheWindow) {
  struct event_base *base = event_base_new();
  evmpi_pg_options_t *o = nullptr;
  ASSERT_EQ(evmpi_pg_options_new(&o), EVMPI_OK);
  EXPECT_EQ(evmpi_pg_options_set_ignore_env(o, true), EVMPI_OK);
  EXPECT_EQ(evmpi_pg_options_set_loop_hold_us(o, 1), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(evmpi_pg_options_set_loop_p2p_poll_us(o, 1000000), EVMPI_OK) << evmpi_last_error();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create_from_comm_with(base, MPI_COMM_SELF, o, &pg), EVMPI_OK)
      << evmpi_last_error();
  evmpi_pg_options_free(o);
  run_pingpong(base, pg, 0, 200);
  evmpi_test_run_for(base, 20); // the stream's last dispatch is over
  double took_ms = -1;
  std::thread other([&] {
    int32_t one = 1, got = 0;
    evmpi_tensor_t to = evmpi_tensor_flat(&one, EVMPI_INT32, 1);
    evmpi_tensor_t tg = evmpi_tensor_flat(&got, EVMPI_INT32, 1);
    evmpi_work_t *r = nullptr, *s = nullptr;
    int64_t t0 = monotonic_ns();
    if (evmpi_recv(pg, &tg, 0, 31, &r) != EVMPI_OK || evmpi_send(pg, &to, 0, 31, &s) != EVMPI_OK)
      return;
    if (evmpi_work_wait(r, EVMPI_TEST_TIMEOUT_MS) == EVMPI_OK &&
        evmpi_work_wait(s, EVMPI_TEST_TIMEOUT_MS) == EVMPI_OK && got == 1)
      took_ms = (double)(monotonic_ns() - t0) / 1e6;
    evmpi_work_release(r);
    evmpi_work_release(s);
  });
  other.join();
  EXPECT_GE(took_ms, 0.0) << "the other thread's send and receive failed";
  EXPECT_LT(took_ms, 300.0) << "ms for a send and a receive to itself, submitted off the loop";
  evmpi_pg_destroy(pg);
  event_base_free(base);
}

// After a quiet spell the poller tests a pending receive once per
// EVMPI_P2P_IDLE_POLL_MS, and a message that came meanwhile is seen at
// the next test: within one period. Open MPI's MPI_Testsome progresses
// only when it finds nothing complete and returns without looking again,
// so a single test per wake-up saw such a message one period later (100
// to 200 ms here). Pairs of ranks (a rank without a partner sits out):
// the sender waits until the receiver's poller has backed off to its
// 100 ms period (its sleeps grow as an eighth of the quiet time), then
// sends its clock; over two messages the receiver's mean delay must stay
// within the period.
TEST_F(P2P, AMessageAfterAQuietSpellIsSeenWithinOneIdlePoll) {
  if (evmpi_test_world_size() < 2)
    GTEST_SKIP() << "needs a peer to send";
  struct event_base *base = event_base_new();
  evmpi_pg_options_t *o = nullptr;
  ASSERT_EQ(evmpi_pg_options_new(&o), EVMPI_OK);
  EXPECT_EQ(evmpi_pg_options_set_ignore_env(o, true), EVMPI_OK);
  EXPECT_EQ(evmpi_pg_options_set_p2p_idle_poll_ms(o, 100), EVMPI_OK) << evmpi_last_error();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create_from_comm_with(base, MPI_COMM_WORLD, o, &pg), EVMPI_OK)
      << evmpi_last_error();
  evmpi_pg_options_free(o);
  int rank = evmpi_pg_rank(pg), size = evmpi_pg_size(pg), peer = rank ^ 1;
  double late_ms = 0;
  const int trials = 2;
  for (int k = 0; peer < size && k < trials; k++) {
    StampedCompletion st;
    evmpi_tensor_t t = evmpi_tensor_flat(&st.stamp, EVMPI_INT64, 1);
    evmpi_work_t *w = nullptr;
    if (rank % 2 == 0) {
      ASSERT_EQ(evmpi_recv(pg, &t, peer, 40, &w), EVMPI_OK) << evmpi_last_error();
      ASSERT_EQ(evmpi_work_on_complete(w, evmpi_test_stamp_cb, &st), EVMPI_OK);
      ASSERT_TRUE(evmpi_test_run_until(base, [](void *a) {
        return static_cast<StampedCompletion *>(a)->done;
      }, &st, EVMPI_TEST_TIMEOUT_MS));
      EXPECT_EQ(st.status, EVMPI_OK);
      late_ms += (double)(st.seen - st.stamp) / 1e6;
    } else {
      evmpi_test_run_for(base, 1500); // 1.3 s of quiet at least: 100 ms sleeps
      st.stamp = evmpi_test_now_ns();
      ASSERT_EQ(evmpi_send(pg, &t, peer, 40, &w), EVMPI_OK) << evmpi_last_error();
      EXPECT_TRUE(evmpi_test_finish(base, &w, 1));
    }
  }
  if (peer < size && rank % 2 == 0)
    EXPECT_LT(late_ms / trials, 115.0) << "mean ms from the send to the receive's callback";
  evmpi_pg_destroy(pg);
  event_base_free(base);
}

} // namespace

int main(int argc, char **argv) {
  int rc = evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE);
  timeline.remove();
  return rc;
}
