// test_debug.cc: EVMPI_DEBUG=detail catches mismatched collectives across
// ranks, and EVMPI_TIMELINE writes a Chrome trace. main() sets both in the
// environment of every rank before MPI or evmpi starts.
#include "harness.h"

#include <event2/event.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>
#include <sys/stat.h>
#include <unistd.h>

namespace {

std::string g_trace_dir;

class Debug : public MpiTest {
protected:
  void SetUp() override {
    base = event_base_new();
    ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK);
    rank = evmpi_pg_rank(pg);
    size = evmpi_pg_size(pg);
  }
  void TearDown() override {
    if (pg)
      evmpi_pg_destroy(pg);
    event_base_free(base);
    MpiTest::TearDown();
  }
  int Run(evmpi_work_t *w) {
    EXPECT_TRUE(evmpi_test_run_until_done(base, &w, 1, EVMPI_TEST_TIMEOUT_MS));
    int st = evmpi_work_status(w);
    last = evmpi_work_error(w) ? evmpi_work_error(w) : "";
    evmpi_work_release(w);
    return st;
  }
  struct event_base *base = nullptr;
  evmpi_pg_t *pg = nullptr;
  int rank = 0, size = 1;
  std::string last;
};

TEST_F(Debug, MatchingCollectivesStillWork) {
  float v[4] = {1, 1, 1, 1};
  evmpi_tensor_t t = evmpi_tensor_flat(v, EVMPI_FLOAT32, 4);
  evmpi_work_t *w;
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK);
  EXPECT_EQ(Run(w), EVMPI_OK) << last;
  EXPECT_EQ(v[0], (float)size);
  ASSERT_EQ(evmpi_broadcast(pg, &t, size - 1, &w), EVMPI_OK);
  EXPECT_EQ(Run(w), EVMPI_OK) << last;
}

TEST_F(Debug, DifferentOperationsAreCaught) {
  if (size < 2)
    GTEST_SKIP() << "a mismatch needs two ranks";
  float v[4] = {1, 2, 3, 4};
  evmpi_tensor_t t = evmpi_tensor_flat(v, EVMPI_FLOAT32, 4);
  evmpi_work_t *w;
  if (rank == 1)
    ASSERT_EQ(evmpi_broadcast(pg, &t, 0, &w), EVMPI_OK);
  else
    ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK);
  EXPECT_EQ(Run(w), EVMPI_ERR_INVALID);
  EXPECT_NE(last.find("mismatched collectives"), std::string::npos) << last;
  EXPECT_NE(last.find("rank 0 called allreduce(float32, 4 elements, op sum)"), std::string::npos) << last;
  EXPECT_NE(last.find("rank 1 called broadcast(float32, 4 elements, root 0)"), std::string::npos) << last;
  EXPECT_EQ(v[0], 1.0f); // nothing ran
  // The group goes on working.
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_MAX, &w), EVMPI_OK);
  EXPECT_EQ(Run(w), EVMPI_OK) << last;
}

TEST_F(Debug, DifferentCountsDtypesAndRootsAreCaught) {
  if (size < 2)
    GTEST_SKIP() << "a mismatch needs two ranks";
  int64_t buf[8] = {0};
  evmpi_work_t *w;
  // Count.
  evmpi_tensor_t t = evmpi_tensor_flat(buf, EVMPI_INT64, rank == size - 1 ? 5 : 4);
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK);
  EXPECT_EQ(Run(w), EVMPI_ERR_INVALID);
  EXPECT_NE(last.find("5 elements"), std::string::npos) << last;
  // Dtype.
  t = evmpi_tensor_flat(buf, rank == 0 ? EVMPI_INT64 : EVMPI_FLOAT64, 4);
  ASSERT_EQ(evmpi_broadcast(pg, &t, 0, &w), EVMPI_OK);
  EXPECT_EQ(Run(w), EVMPI_ERR_INVALID);
  EXPECT_NE(last.find("float64"), std::string::npos) << last;
  // Root.
  t = evmpi_tensor_flat(buf, EVMPI_INT64, 4);
  ASSERT_EQ(evmpi_broadcast(pg, &t, rank == 0 ? 1 : 0, &w), EVMPI_OK);
  EXPECT_EQ(Run(w), EVMPI_ERR_INVALID);
  EXPECT_NE(last.find("root 1"), std::string::npos) << last;
  // Reduce op.
  ASSERT_EQ(evmpi_allreduce(pg, &t, rank == 0 ? EVMPI_MIN : EVMPI_MAX, &w), EVMPI_OK);
  EXPECT_EQ(Run(w), EVMPI_ERR_INVALID);
  EXPECT_NE(last.find("op min"), std::string::npos) << last;
}

// The signature comes from the operation's row: the root of every rooted
// operation and the reduce op of every reduction are compared, not only
// broadcast's and allreduce's.
TEST_F(Debug, RootsAndReduceOpsOfOtherOperationsAreCaught) {
  if (size < 2)
    GTEST_SKIP() << "a mismatch needs two ranks";
  int root = rank == 0 ? 0 : 1; // rank 0 and rank 1 disagree
  int64_t buf[4] = {1, 2, 3, 4};
  evmpi_tensor_t t = evmpi_tensor_flat(buf, EVMPI_INT64, 4);
  evmpi_work_t *w;
  ASSERT_EQ(evmpi_reduce(pg, &t, EVMPI_SUM, root, &w), EVMPI_OK);
  EXPECT_EQ(Run(w), EVMPI_ERR_INVALID);
  EXPECT_NE(last.find("rank 0 called reduce(int64, 4 elements, root 0, op sum)"), std::string::npos) << last;
  EXPECT_NE(last.find("rank 1 called reduce(int64, 4 elements, root 1, op sum)"), std::string::npos) << last;
  std::vector<int64_t> gathered(4 * size);
  std::vector<evmpi_tensor_t> outs;
  for (int r = 0; r < size; r++)
    outs.push_back(evmpi_tensor_flat(&gathered[4 * r], EVMPI_INT64, 4));
  ASSERT_EQ(evmpi_gather(pg, rank == root ? outs.data() : nullptr, &t, root, &w), EVMPI_OK);
  EXPECT_EQ(Run(w), EVMPI_ERR_INVALID);
  EXPECT_NE(last.find("rank 1 called gather(int64, 4 elements, root 1)"), std::string::npos) << last;
  ASSERT_EQ(evmpi_allreduce_coalesced(pg, &t, 1, rank == 0 ? EVMPI_MIN : EVMPI_MAX, &w), EVMPI_OK);
  EXPECT_EQ(Run(w), EVMPI_ERR_INVALID);
  EXPECT_NE(last.find("rank 0 called allreduce_coalesced(int64, 4 elements, op min)"), std::string::npos)
      << last;
  EXPECT_EQ(buf[0], 1); // nothing ran
  ASSERT_EQ(evmpi_allreduce_coalesced(pg, &t, 1, EVMPI_MAX, &w), EVMPI_OK);
  EXPECT_EQ(Run(w), EVMPI_OK) << last;
}

// The trace holds a complete event per operation, on this rank's process.
TEST_F(Debug, TimelineRecordsEveryOperation) {
  int32_t v = 1, in = 0;
  evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_INT32, 1), ti = evmpi_tensor_flat(&in, EVMPI_INT32, 1);
  evmpi_work_t *w;
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK);
  EXPECT_EQ(Run(w), EVMPI_OK);
  ASSERT_EQ(evmpi_send(pg, &t, rank, 3, &w), EVMPI_OK);
  evmpi_work_t *r;
  ASSERT_EQ(evmpi_recv(pg, &ti, rank, 3, &r), EVMPI_OK);
  EXPECT_EQ(Run(r), EVMPI_OK);
  EXPECT_EQ(Run(w), EVMPI_OK);
  evmpi_pg_destroy(pg); // flushes the trace
  pg = nullptr;
  int wrank = evmpi_test_world_rank();
  std::ifstream f(g_trace_dir + "/trace-" + std::to_string(wrank) + ".json");
  ASSERT_TRUE(f.good()) << "no trace file for rank " << wrank;
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  EXPECT_EQ(text.rfind("[\n", 0), 0u);
  EXPECT_NE(text.find("\"name\":\"mpi:all_reduce\",\"cat\":\"collective\",\"ph\":\"X\""), std::string::npos);
  EXPECT_NE(text.find("\"name\":\"mpi:send\",\"cat\":\"p2p\""), std::string::npos);
  EXPECT_NE(text.find("\"name\":\"mpi:recv\""), std::string::npos);
  EXPECT_NE(text.find("\"pid\":" + std::to_string(wrank)), std::string::npos);
  // Balanced braces: every event is a whole object.
  int depth = 0;
  for (char c : text) {
    depth += c == '{' ? 1 : c == '}' ? -1 : 0;
    ASSERT_GE(depth, 0);
  }
  EXPECT_EQ(depth, 0);
}

} // namespace

int main(int argc, char **argv) {
  setenv("EVMPI_DEBUG", "detail", 1);
  // One directory per job, named by the launcher's job id when there is one.
  const char *job = std::getenv("OMPI_MCA_ess_base_jobid");
  g_trace_dir = std::string("/tmp/evmpi-trace-") + (job ? job : std::to_string(getppid()));
  mkdir(g_trace_dir.c_str(), 0700);
  setenv("EVMPI_TIMELINE", (g_trace_dir + "/trace-%r.json").c_str(), 1);
  return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE);
}
