// test_timeout.cc: the group operation timeout. Rank 0 runs an allreduce
// that the other ranks join only when rank 0 tells them to, over
// MPI_COMM_WORLD, after it has seen everything it checks; with a 200 ms
// timeout the allreduce fails with EVMPI_ERR_TIMEOUT, the queue behind it is
// aborted, the group refuses new work, and destroy returns without waiting
// for the stuck call (it cannot have completed: the peers have not joined).
#include "harness.h"

#include <event2/event.h>
#include <mpi.h>

#include <chrono>
#include <cstring>
#include <thread>

namespace {

constexpr int kGoTag = 4711;
// Wide bounds where a time is the promise: a load that stretches 200 ms
// past them is a hang, not a slow machine.
constexpr double kTimeoutMaxMs = 20000;
constexpr double kDestroyMaxMs = 10000;

// Posts *req for rank 0's go into *go and waits up to timeout_ms for it;
// false if it has not come, and then the caller completes *req later.
bool wait_for_go(MPI_Request *req, int *go, int timeout_ms) {
  int done = 0;
  MPI_Irecv(go, 1, MPI_INT, 0, kGoTag, MPI_COMM_WORLD, req);
  double deadline = evmpi_test_now_ms() + timeout_ms;
  while (!done && evmpi_test_now_ms() < deadline) {
    MPI_Test(req, &done, MPI_STATUS_IGNORE);
    if (!done)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return done != 0;
}

class Timeout : public MpiTest {};

TEST_F(Timeout, StuckCollectiveFailsAndBreaksTheGroup) {
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK);
  int rank = evmpi_pg_rank(pg), size = evmpi_pg_size(pg);
  if (size < 2) {
    evmpi_pg_destroy(pg);
    event_base_free(base);
    GTEST_SKIP() << "needs a peer that arrives late";
  }
  // MPI may still write the timed-out allreduce's buffer when the peers
  // arrive, long after this test returned: it must outlive the test.
  static int32_t v;
  v = 1;
  evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_INT32, 1);
  evmpi_work_t *w = nullptr;
  if (rank == 0) {
    EXPECT_EQ(evmpi_pg_set_timeout(pg, -1), EVMPI_ERR_INVALID);
    ASSERT_EQ(evmpi_pg_set_timeout(pg, 200), EVMPI_OK);
    ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK);
    evmpi_work_t *queued = nullptr;
    ASSERT_EQ(evmpi_barrier(pg, &queued), EVMPI_OK);
    double t0 = evmpi_test_now_ms();
    ASSERT_TRUE(evmpi_test_run_until_done(base, &w, 1, EVMPI_TEST_TIMEOUT_MS));
    double took = evmpi_test_now_ms() - t0;
    // The peers have not joined: only the timeout can have ended it.
    EXPECT_EQ(evmpi_work_status(w), EVMPI_ERR_TIMEOUT);
    ASSERT_NE(evmpi_work_error(w), nullptr);
    EXPECT_NE(std::strstr(evmpi_work_error(w), "allreduce (#1) timed out after 200 ms"), nullptr)
        << evmpi_work_error(w);
    EXPECT_GE(took, 150.0) << "timed out after " << took << " ms of 200";
    EXPECT_LT(took, kTimeoutMaxMs) << "timed out after " << took << " ms of 200";
    ASSERT_TRUE(evmpi_test_run_until_done(base, &queued, 1, EVMPI_TEST_TIMEOUT_MS));
    EXPECT_EQ(evmpi_work_status(queued), EVMPI_ERR_ABORTED);
    EXPECT_NE(std::strstr(evmpi_work_error(queued), "broken"), nullptr) << evmpi_work_error(queued);
    evmpi_work_t *later = reinterpret_cast<evmpi_work_t *>(1);
    EXPECT_EQ(evmpi_barrier(pg, &later), EVMPI_ERR_ABORTED);
    EXPECT_EQ(later, nullptr);
    EXPECT_NE(std::strstr(evmpi_last_error(), "allreduce (#1) timed out"), nullptr)
        << evmpi_last_error();
    evmpi_work_record_t rec;
    ASSERT_EQ(evmpi_work_get_record(w, &rec), EVMPI_OK);
    EXPECT_EQ(rec.seq, 1u);
    int64_t ran_ns = rec.finished_ns - rec.started_ns;
    EXPECT_GE(ran_ns, 150 * 1000000LL) << "record: started " << rec.started_ns << " finished "
                                       << rec.finished_ns;
    EXPECT_LT(ran_ns, static_cast<int64_t>(kTimeoutMaxMs * 1e6))
        << "record: started " << rec.started_ns << " finished " << rec.finished_ns;
    evmpi_work_release(queued);
    evmpi_work_release(w);
    double d0 = evmpi_test_now_ms();
    evmpi_pg_destroy(pg); // the worker is still inside MPI_Allreduce
    double destroy_ms = evmpi_test_now_ms() - d0;
    // Destroy returned before any peer joined, so it did not wait for the
    // stuck call; were it to wait, it would return only when the peers give
    // up waiting for the go (below), past this bound.
    EXPECT_LT(destroy_ms, kDestroyMaxMs) << "destroy took " << destroy_ms << " ms";
    int go = 1;
    for (int r = 1; r < size; r++)
      MPI_Send(&go, 1, MPI_INT, r, kGoTag, MPI_COMM_WORLD);
  } else {
    // Join once rank 0 is done, or, should it hang (in destroy, say), after
    // a deadline that frees it and fails the test.
    int wait_ms = static_cast<int>(kTimeoutMaxMs + kDestroyMaxMs) + 10000;
    MPI_Request go_req;
    int go = 0;
    bool told = wait_for_go(&go_req, &go, wait_ms);
    EXPECT_TRUE(told) << "rank 0 did not say go within " << wait_ms << " ms";
    ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK);
    ASSERT_TRUE(evmpi_test_finish(base, &w, 1));
    evmpi_pg_destroy(pg);
    if (!told)
      MPI_Wait(&go_req, MPI_STATUS_IGNORE); // rank 0 sends it once its destroy is back
    EXPECT_EQ(go, 1);
  }
  event_base_free(base);
}

// A timeout that is not reached changes nothing, and records are ordered.
TEST_F(Timeout, GenerousTimeoutAndRecords) {
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK);
  ASSERT_EQ(evmpi_pg_set_timeout(pg, 20000), EVMPI_OK);
  evmpi_work_t *ws[3];
  int32_t v[3] = {1, 1, 1};
  for (int i = 0; i < 3; i++) {
    evmpi_tensor_t t = evmpi_tensor_flat(&v[i], EVMPI_INT32, 1);
    ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &ws[i]), EVMPI_OK);
  }
  ASSERT_TRUE(evmpi_test_run_until_done(base, ws, 3, EVMPI_TEST_TIMEOUT_MS));
  uint64_t prev_seq = 0;
  int64_t prev_finish = 0;
  for (int i = 0; i < 3; i++) {
    EXPECT_EQ(evmpi_work_status(ws[i]), EVMPI_OK);
    EXPECT_EQ(v[i], evmpi_pg_size(pg));
    evmpi_work_record_t r;
    ASSERT_EQ(evmpi_work_get_record(ws[i], &r), EVMPI_OK);
    EXPECT_GT(r.seq, prev_seq);
    EXPECT_LE(r.queued_ns, r.started_ns);
    EXPECT_LE(r.started_ns, r.finished_ns);
    EXPECT_GE(r.finished_ns, prev_finish); // in submission order
    prev_seq = r.seq;
    prev_finish = r.finished_ns;
    evmpi_work_release(ws[i]);
  }
  EXPECT_EQ(evmpi_work_get_record(nullptr, nullptr), EVMPI_ERR_INVALID);
  ASSERT_EQ(evmpi_pg_set_timeout(pg, 0), EVMPI_OK); // off again
  evmpi_pg_destroy(pg);
  event_base_free(base);
}

} // namespace

// evmpi initialises MPI here, so that MPI_Finalize runs at exit only after
// rank 0's detached worker has come back out of the timed-out allreduce
// (evmpi waits for it; an application that finalises MPI itself has no way
// to, and finalising under that worker crashes in unloaded MPI code).
int main(int argc, char **argv) { return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_LEAVE_TO_EVMPI); }
