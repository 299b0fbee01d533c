// test_p2p_deadline.cc: deadlines of sends and receives, per group
// (evmpi_pg_set_p2p_timeout) and per work (evmpi_work_set_deadline). A
// missed deadline is EVMPI_ERR_TIMEOUT naming the operation, its sequence
// number, the peer and the tag; it breaks the group; destroy then does not
// wait for the sends left pending. No test here depends on speed: each
// deadline is either missed for certain (nobody sends) or far longer than
// the exchange it bounds.
#include "harness.h"

#include <event2/event.h>
#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Loop = TestLoop;

class P2PDeadline : public MpiTest {};

uint64_t seq_of(evmpi_work_t *w) {
  evmpi_work_record_t rec;
  EXPECT_EQ(evmpi_work_get_record(w, &rec), EVMPI_OK);
  return rec.seq;
}

double issued_to_finished_ms(evmpi_work_t *w) {
  evmpi_work_record_t rec;
  EXPECT_EQ(evmpi_work_get_record(w, &rec), EVMPI_OK);
  return (double)(rec.finished_ns - rec.started_ns) / 1e6;
}

std::string error_of(evmpi_work_t *w) {
  const char *e = evmpi_work_error(w);
  return e ? e : "(no message)";
}

void count_cb(evmpi_work_t *, void *arg) { ++*static_cast<int *>(arg); }

// Nobody sends: both receives miss the group's deadline, are cancelled and
// say so; their callbacks run; the group is broken, so every later
// submission fails at once, naming the first timeout.
TEST_F(P2PDeadline, AReceiveNobodySendsToTimesOutAndBreaksTheGroup) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  int rank = evmpi_pg_rank(l.pg), size = evmpi_pg_size(l.pg);
  int peer = (rank + 1) % size;
  ASSERT_EQ(evmpi_pg_set_p2p_timeout(l.pg, 100), EVMPI_OK) << evmpi_last_error();
  int32_t a = -1, b = -1;
  evmpi_tensor_t ta = evmpi_tensor_flat(&a, EVMPI_INT32, 1);
  evmpi_tensor_t tb = evmpi_tensor_flat(&b, EVMPI_INT32, 1);
  evmpi_work_t *w[2];
  ASSERT_EQ(evmpi_recv(l.pg, &ta, peer, 7, &w[0]), EVMPI_OK) << evmpi_last_error();
  ASSERT_EQ(evmpi_recv_anysource(l.pg, &tb, 8, &w[1]), EVMPI_OK) << evmpi_last_error();
  int calls = 0;
  ASSERT_EQ(evmpi_work_on_complete(w[0], count_cb, &calls), EVMPI_OK);
  ASSERT_EQ(evmpi_work_on_complete(w[1], count_cb, &calls), EVMPI_OK);
  ASSERT_TRUE(evmpi_test_run_until_flag(l.base, &calls, EVMPI_TEST_TIMEOUT_MS));
  ASSERT_TRUE(evmpi_test_run_until_done(l.base, w, 2, EVMPI_TEST_TIMEOUT_MS));

  char want[256];
  std::snprintf(want, sizeof want,
                "recv (#%llu) from rank %d, tag 7 timed out after 100 ms; cancelled, nothing "
                "arrived; the group is broken",
                (unsigned long long)seq_of(w[0]), peer);
  EXPECT_EQ(evmpi_work_status(w[0]), EVMPI_ERR_TIMEOUT);
  EXPECT_EQ(error_of(w[0]), want);
  std::snprintf(want, sizeof want,
                "recv_anysource (#%llu) from any rank, tag 8 timed out after 100 ms; cancelled, "
                "nothing arrived; the group is broken",
                (unsigned long long)seq_of(w[1]));
  EXPECT_EQ(evmpi_work_status(w[1]), EVMPI_ERR_TIMEOUT);
  EXPECT_EQ(error_of(w[1]), want);
  // Not before its deadline.
  EXPECT_GE(issued_to_finished_ms(w[0]), 100.0);
  EXPECT_EQ(a, -1);
  EXPECT_EQ(evmpi_work_source_rank(w[0]), -1);
  const evmpi_tensor_t *res;
  EXPECT_EQ(evmpi_work_result(w[0], &res), 0u);
  EXPECT_TRUE(evmpi_test_run_until(
      l.base, [](void *c) { return *static_cast<int *>(c) == 2; }, &calls,
      EVMPI_TEST_TIMEOUT_MS));

  // Broken: new work of any kind is refused, naming the first timeout.
  std::snprintf(want, sizeof want, "the group is broken: recv (#%llu) from rank %d, tag 7 timed "
                "out after 100 ms", (unsigned long long)seq_of(w[0]), peer);
  evmpi_work_t *more = nullptr;
  EXPECT_EQ(evmpi_send(l.pg, &ta, peer, 7, &more), EVMPI_ERR_ABORTED);
  EXPECT_EQ(more, nullptr);
  EXPECT_NE(std::strstr(evmpi_last_error(), want), nullptr) << evmpi_last_error();
  EXPECT_EQ(std::strncmp(evmpi_last_error(), "send: ", 6), 0) << evmpi_last_error();
  EXPECT_EQ(evmpi_allreduce(l.pg, &ta, EVMPI_SUM, &more), EVMPI_ERR_ABORTED);
  EXPECT_NE(std::strstr(evmpi_last_error(), want), nullptr) << evmpi_last_error();
  evmpi_work_release(w[0]);
  evmpi_work_release(w[1]);
}

// A message that arrives before the deadline completes as usual, and its
// deadline, once passed, breaks nothing.
TEST_F(P2PDeadline, AMatchedReceiveBeforeItsDeadlineDoesNotTimeOut) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  int rank = evmpi_pg_rank(l.pg), size = evmpi_pg_size(l.pg);
  int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  const int deadline_ms = 1000;
  ASSERT_EQ(evmpi_pg_set_p2p_timeout(l.pg, deadline_ms), EVMPI_OK);
  MPI_Barrier(MPI_COMM_WORLD);
  int32_t out = rank, in = -1;
  evmpi_tensor_t to = evmpi_tensor_flat(&out, EVMPI_INT32, 1);
  evmpi_tensor_t ti = evmpi_tensor_flat(&in, EVMPI_INT32, 1);
  evmpi_work_t *w[2];
  ASSERT_EQ(evmpi_recv(l.pg, &ti, prev, 3, &w[0]), EVMPI_OK) << evmpi_last_error();
  ASSERT_EQ(evmpi_send(l.pg, &to, next, 3, &w[1]), EVMPI_OK) << evmpi_last_error();
  double t0 = evmpi_test_now_ms();
  ASSERT_TRUE(evmpi_test_run_until_done(l.base, w, 2, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(evmpi_work_status(w[0]), EVMPI_OK) << error_of(w[0]);
  EXPECT_EQ(evmpi_work_status(w[1]), EVMPI_OK) << error_of(w[1]);
  EXPECT_EQ(in, prev);
  // Too late to give a completed work a deadline.
  EXPECT_EQ(evmpi_work_set_deadline(w[0], 10), EVMPI_ERR_STATE);
  EXPECT_NE(std::strstr(evmpi_last_error(), "already completed"), nullptr) << evmpi_last_error();
  // Past the deadline, the group still works.
  double left = deadline_ms + 100 - (evmpi_test_now_ms() - t0);
  if (left > 0)
    evmpi_test_run_for(l.base, (int)left);
  MPI_Barrier(MPI_COMM_WORLD);
  ASSERT_EQ(evmpi_recv(l.pg, &ti, prev, 4, &w[0]), EVMPI_OK) << evmpi_last_error();
  ASSERT_EQ(evmpi_send(l.pg, &to, next, 4, &w[1]), EVMPI_OK) << evmpi_last_error();
  evmpi_work_release(w[0]);
  evmpi_work_release(w[1]);
  ASSERT_EQ(evmpi_recv(l.pg, &ti, prev, 4, &w[0]), EVMPI_OK) << evmpi_last_error();
  ASSERT_EQ(evmpi_send(l.pg, &to, next, 4, &w[1]), EVMPI_OK) << evmpi_last_error();
  ASSERT_TRUE(evmpi_test_run_until_done(l.base, w, 2, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(evmpi_work_status(w[0]), EVMPI_OK) << error_of(w[0]);
  evmpi_work_release(w[0]);
  evmpi_work_release(w[1]);
}

// A receive's own deadline beats the group's, both ways: a shorter one
// where the group has none or a long one, and none where the group's would
// have fired.
TEST_F(P2PDeadline, APerWorkDeadlineOverridesTheGroups) {
  int rank = evmpi_test_world_rank(), size = evmpi_test_world_size();
  int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  for (int group_ms : {0, 600000}) {
    Loop l;
    ASSERT_NE(l.pg, nullptr);
    ASSERT_EQ(evmpi_pg_set_p2p_timeout(l.pg, group_ms), EVMPI_OK);
    int32_t in = -1;
    evmpi_tensor_t ti = evmpi_tensor_flat(&in, EVMPI_INT32, 1);
    evmpi_work_t *w;
    ASSERT_EQ(evmpi_recv(l.pg, &ti, prev, 21, &w), EVMPI_OK) << evmpi_last_error();
    ASSERT_EQ(evmpi_work_set_deadline(w, 100), EVMPI_OK) << evmpi_last_error();
    ASSERT_TRUE(evmpi_test_run_until_done(l.base, &w, 1, EVMPI_TEST_TIMEOUT_MS));
    EXPECT_EQ(evmpi_work_status(w), EVMPI_ERR_TIMEOUT) << "group timeout " << group_ms;
    char want[160];
    std::snprintf(want, sizeof want, "recv (#%llu) from rank %d, tag 21 timed out after 100 ms",
                  (unsigned long long)seq_of(w), prev);
    EXPECT_NE(error_of(w).find(want), std::string::npos) << error_of(w);
    evmpi_work_release(w);
  }

  // No deadline for this receive, though the group's would have fired
  // long before its message comes.
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  ASSERT_EQ(evmpi_pg_set_p2p_timeout(l.pg, 300), EVMPI_OK);
  int32_t out = rank, in = -1;
  evmpi_tensor_t to = evmpi_tensor_flat(&out, EVMPI_INT32, 1);
  evmpi_tensor_t ti = evmpi_tensor_flat(&in, EVMPI_INT32, 1);
  evmpi_work_t *w[2];
  ASSERT_EQ(evmpi_recv(l.pg, &ti, prev, 22, &w[0]), EVMPI_OK) << evmpi_last_error();
  ASSERT_EQ(evmpi_work_set_deadline(w[0], 0), EVMPI_OK) << evmpi_last_error();
  evmpi_test_run_for(l.base, 700);
  EXPECT_FALSE(evmpi_work_is_completed(w[0])) << error_of(w[0]);
  MPI_Barrier(MPI_COMM_WORLD);
  // The send gets no deadline either (it may complete before a call on it
  // could take its deadline away); the receive keeps its own.
  ASSERT_EQ(evmpi_pg_set_p2p_timeout(l.pg, 0), EVMPI_OK);
  ASSERT_EQ(evmpi_send(l.pg, &to, next, 22, &w[1]), EVMPI_OK) << evmpi_last_error();
  ASSERT_TRUE(evmpi_test_run_until_done(l.base, w, 2, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(evmpi_work_status(w[0]), EVMPI_OK) << error_of(w[0]);
  EXPECT_EQ(evmpi_work_status(w[1]), EVMPI_OK) << error_of(w[1]);
  EXPECT_EQ(in, prev);
  evmpi_work_release(w[0]);
  evmpi_work_release(w[1]);
  // Not broken.
  evmpi_work_t *ar;
  ASSERT_EQ(evmpi_allreduce(l.pg, &to, EVMPI_SUM, &ar), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(evmpi_work_wait(ar, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
  evmpi_work_release(ar);
}

// A large send nobody receives yet misses its deadline and is abandoned; a
// second one without a deadline stays pending, and destroy, on the group
// that the first broke, returns at once instead of waiting for it (the
// group has no collective timeout to bound it). The receiver takes both
// messages later: MPI still delivers what was abandoned.
TEST_F(P2PDeadline, DestroyAfterASendTimedOutReturnsPromptly) {
  if (evmpi_test_world_size() < 2)
    GTEST_SKIP() << "needs a peer that receives late";
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  const size_t n = 8 << 20; // past every eager limit: pending until received
  // MPI may read an abandoned send's buffer until it has delivered it.
  static std::vector<uint8_t> data[2];
  int rank = evmpi_pg_rank(pg);
  if (rank == 0) {
    data[0].assign(n, 5);
    data[1].assign(n, 6);
    ASSERT_EQ(evmpi_pg_set_p2p_timeout(pg, 200), EVMPI_OK);
    evmpi_tensor_t t0 = evmpi_tensor_flat(data[0].data(), EVMPI_UINT8, (int64_t)n);
    evmpi_tensor_t t1 = evmpi_tensor_flat(data[1].data(), EVMPI_UINT8, (int64_t)n);
    evmpi_work_t *s[2];
    ASSERT_EQ(evmpi_send(pg, &t0, 1, 77, &s[0]), EVMPI_OK) << evmpi_last_error();
    ASSERT_EQ(evmpi_send(pg, &t1, 1, 78, &s[1]), EVMPI_OK) << evmpi_last_error();
    ASSERT_EQ(evmpi_work_set_deadline(s[1], 0), EVMPI_OK) << evmpi_last_error();
    // A receive from any rank that nothing matches, pending at destroy too.
    static int32_t sink;
    evmpi_tensor_t ta = evmpi_tensor_flat(&sink, EVMPI_INT32, 1);
    evmpi_work_t *any = nullptr;
    ASSERT_EQ(evmpi_recv_anysource(pg, &ta, 79, &any), EVMPI_OK) << evmpi_last_error();
    ASSERT_EQ(evmpi_work_set_deadline(any, 0), EVMPI_OK) << evmpi_last_error();
    ASSERT_TRUE(evmpi_test_run_until_done(base, &s[0], 1, EVMPI_TEST_TIMEOUT_MS));
    char want[256];
    std::snprintf(want, sizeof want,
                  "send (#%llu) to rank 1, tag 77 timed out after 200 ms; abandoned, MPI may "
                  "still deliver it; the group is broken",
                  (unsigned long long)seq_of(s[0]));
    EXPECT_EQ(evmpi_work_status(s[0]), EVMPI_ERR_TIMEOUT);
    EXPECT_EQ(error_of(s[0]), want);
    EXPECT_FALSE(evmpi_work_is_completed(s[1])) << error_of(s[1]);
    double t = evmpi_test_now_ms();
    evmpi_pg_destroy(pg);
    double took = evmpi_test_now_ms() - t;
    // Only turns a wait for the receiver (which waits for us) into a failure.
    EXPECT_LT(took, 10000.0) << "destroy took " << took << " ms";
    EXPECT_EQ(evmpi_work_status(s[1]), EVMPI_ERR_ABORTED);
    std::snprintf(want, sizeof want, "send (#%llu) to rank 1, tag 78: abandoned",
                  (unsigned long long)seq_of(s[1]));
    EXPECT_NE(error_of(s[1]).find(want), std::string::npos) << error_of(s[1]);
    // Named as every send or receive is: "from any rank", not a rank -1.
    EXPECT_TRUE(evmpi_work_is_completed(any));
    EXPECT_NE(evmpi_work_status(any), EVMPI_OK);
    std::snprintf(want, sizeof want, "recv_anysource (#%llu) from any rank, tag 79: ",
                  (unsigned long long)seq_of(any));
    EXPECT_NE(error_of(any).find(want), std::string::npos) << error_of(any);
    evmpi_work_release(any);
    evmpi_work_release(s[0]);
    evmpi_work_release(s[1]);
    MPI_Barrier(MPI_COMM_WORLD); // now rank 1 receives
  } else if (rank == 1) {
    MPI_Barrier(MPI_COMM_WORLD);
    std::vector<uint8_t> in[2] = {std::vector<uint8_t>(n, 0), std::vector<uint8_t>(n, 0)};
    evmpi_work_t *r[2];
    for (int i = 0; i < 2; i++) {
      evmpi_tensor_t t = evmpi_tensor_flat(in[i].data(), EVMPI_UINT8, (int64_t)n);
      ASSERT_EQ(evmpi_recv(pg, &t, 0, 77 + i, &r[i]), EVMPI_OK) << evmpi_last_error();
    }
    ASSERT_TRUE(evmpi_test_run_until_done(base, r, 2, EVMPI_TEST_TIMEOUT_MS));
    for (int i = 0; i < 2; i++) {
      EXPECT_EQ(evmpi_work_status(r[i]), EVMPI_OK) << error_of(r[i]);
      EXPECT_EQ(in[i][0], 5 + i);
      EXPECT_EQ(in[i][n - 1], 5 + i);
      evmpi_work_release(r[i]);
    }
    evmpi_pg_destroy(pg);
  } else {
    MPI_Barrier(MPI_COMM_WORLD);
    evmpi_pg_destroy(pg);
  }
  event_base_free(base);
}

TEST_F(P2PDeadline, BadArgumentsAreRefused) {
  Loop l;
  ASSERT_NE(l.pg, nullptr);
  EXPECT_EQ(evmpi_pg_set_p2p_timeout(nullptr, 10), EVMPI_ERR_INVALID);
  EXPECT_NE(std::strstr(evmpi_last_error(), "pg_set_p2p_timeout: pg is NULL"), nullptr);
  EXPECT_EQ(evmpi_pg_set_p2p_timeout(l.pg, -1), EVMPI_ERR_INVALID);
  EXPECT_NE(std::strstr(evmpi_last_error(), "timeout_ms -1 is negative"), nullptr)
      << evmpi_last_error();
  EXPECT_EQ(evmpi_work_set_deadline(nullptr, 10), EVMPI_ERR_INVALID);
  EXPECT_NE(std::strstr(evmpi_last_error(), "work_set_deadline: work is NULL"), nullptr);
  int32_t v = 1;
  evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_INT32, 1);
  evmpi_work_t *ar;
  ASSERT_EQ(evmpi_allreduce(l.pg, &t, EVMPI_SUM, &ar), EVMPI_OK);
  EXPECT_EQ(evmpi_work_set_deadline(ar, 10), EVMPI_ERR_INVALID);
  EXPECT_NE(std::strstr(evmpi_last_error(), "is a collective"), nullptr) << evmpi_last_error();
  EXPECT_EQ(evmpi_work_wait(ar, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
  evmpi_work_release(ar);
  // A receive: a negative deadline is refused and changes nothing.
  evmpi_work_t *r;
  int rank = evmpi_pg_rank(l.pg);
  ASSERT_EQ(evmpi_recv(l.pg, &t, rank, 31, &r), EVMPI_OK);
  EXPECT_EQ(evmpi_work_set_deadline(r, -5), EVMPI_ERR_INVALID);
  EXPECT_NE(std::strstr(evmpi_last_error(), "timeout_ms -5 is negative"), nullptr)
      << evmpi_last_error();
  ASSERT_EQ(evmpi_work_abort(r), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(evmpi_work_wait(r, EVMPI_TEST_TIMEOUT_MS), EVMPI_ERR_ABORTED);
  evmpi_work_release(r);
}

} // namespace

int main(int argc, char **argv) { return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE); }
