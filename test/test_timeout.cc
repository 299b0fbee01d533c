// test_timeout.cc: the group operation timeout. Rank 0 runs an allreduce
// that the other ranks join only a second later; with a 200 ms timeout it
// fails with EVMPI_ERR_TIMEOUT, the queue behind it is aborted, the group
// refuses new work, and destroy returns without waiting for the stuck call.
#include "harness.h"

#include <event2/event.h>

#include <chrono>
#include <cstring>
#include <thread>

namespace {

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
    EXPECT_EQ(evmpi_work_status(w), EVMPI_ERR_TIMEOUT);
    ASSERT_NE(evmpi_work_error(w), nullptr);
    EXPECT_NE(std::strstr(evmpi_work_error(w), "allreduce (#1) timed out after 200 ms"), nullptr)
        << evmpi_work_error(w);
    EXPECT_GE(took, 150.0);
    EXPECT_LT(took, 900.0); // well before the peers arrive at 1000 ms
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
    EXPECT_GE(rec.finished_ns - rec.started_ns, 150 * 1000000LL);
    evmpi_work_release(queued);
    evmpi_work_release(w);
    double d0 = evmpi_test_now_ms();
    evmpi_pg_destroy(pg); // the worker is still inside MPI_Allreduce
    EXPECT_LT(evmpi_test_now_ms() - d0, 500.0);
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK);
    ASSERT_TRUE(evmpi_test_run_until_done(base, &w, 1, EVMPI_TEST_TIMEOUT_MS));
    EXPECT_EQ(evmpi_work_status(w), EVMPI_OK) << evmpi_work_error(w);
    evmpi_work_release(w);
    evmpi_pg_destroy(pg);
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

int main(int argc, char **argv) { return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE); }
