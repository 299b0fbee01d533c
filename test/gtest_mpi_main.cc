// gtest_mpi_main.cc: GoogleTest under mpirun. Every rank runs every test;
// after each test the ranks exchange their outcome (MpiTest::TearDown), so a
// failure anywhere fails the test everywhere; rank 0 prints the report and
// other ranks print only their own failures; every rank exits with the
// status agreed by all.
#include "harness.h"

#include <event2/event.h>
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

bool mpi_ready() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

// On ranks other than 0: print failures, with the rank, and nothing else.
class FailurePrinter : public ::testing::EmptyTestEventListener {
public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult &r) override {
    if (r.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                   r.file_name() ? r.file_name() : "?", r.line_number(), r.summary());
  }

private:
  int rank_;
};

} // namespace

void evmpi_test_stamp_cb(evmpi_work_t *w, void *arg) {
  auto *st = static_cast<StampedCompletion *>(arg);
  st->seen = evmpi_test_now_ns();
  st->status = evmpi_work_status(w);
  st->done = true;
  evmpi_work_release(w);
}

bool evmpi_test_finish(struct event_base *base, evmpi_work_t *const *works, int n) {
  bool done = evmpi_test_run_until_done(base, works, n, EVMPI_TEST_TIMEOUT_MS);
  EXPECT_TRUE(done) << "not completed in " << EVMPI_TEST_TIMEOUT_MS << " ms";
  if (!done)
    return false;
  for (int i = 0; i < n; i++) {
    EXPECT_EQ(evmpi_work_status(works[i]), EVMPI_OK)
        << evmpi_work_name(works[i]) << ": " << evmpi_work_error(works[i]);
    evmpi_work_release(works[i]);
  }
  return true;
}

void evmpi_test_check_subgroup(struct event_base *base, evmpi_pg_t *pg,
                               const std::vector<int> &ranks, int index) {
  EXPECT_EQ(evmpi_pg_rank(pg), index);
  EXPECT_EQ(evmpi_pg_size(pg), (int)ranks.size());
  int64_t v = evmpi_test_world_rank();
  evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_INT64, 1);
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
  ASSERT_TRUE(evmpi_test_finish(base, &w, 1));
  int64_t expect = 0;
  for (int r : ranks)
    expect += r;
  EXPECT_EQ(v, expect);
}

TestLoop::TestLoop() : base(event_base_new()) {
  EXPECT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
}

TestLoop::~TestLoop() {
  evmpi_pg_destroy(pg);
  event_base_free(base);
}

void ExternalLoopTest::SetUp() {
  evmpi_pg_options_t *opts = nullptr;
  ASSERT_EQ(evmpi_pg_options_new(&opts), EVMPI_OK);
  int rc = evmpi_pg_options_set_loop(opts, EVMPI_LOOP_EXTERNAL);
  if (rc == EVMPI_OK)
    rc = evmpi_pg_create_with(nullptr, nullptr, 0, opts, &pg);
  evmpi_pg_options_free(opts); // the group does not need it once created
  ASSERT_EQ(rc, EVMPI_OK) << evmpi_last_error();
}

void ExternalLoopTest::DestroyGroup() {
  if (pg)
    evmpi_pg_destroy(pg);
  pg = nullptr;
}

void ExternalLoopTest::TearDown() {
  DestroyGroup();
  MpiTest::TearDown();
}

evmpi_work_t *ExternalLoopTest::AllreduceThatDestroys() {
  evmpi_tensor_t t = evmpi_tensor_flat(&cb_x, EVMPI_INT32, 1);
  evmpi_work_t *w = nullptr;
  EXPECT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
  if (!w)
    return nullptr;
  cb_pg = pg;
  int rc = evmpi_work_on_complete(w, [](evmpi_work_t *w, void *arg) {
    auto *f = static_cast<ExternalLoopTest *>(arg);
    f->cb_ran++;
    f->cb_sum_ok = evmpi_work_is_success(w) && f->cb_x == evmpi_pg_size(f->cb_pg);
    evmpi_pg_destroy(f->cb_pg);
  }, this);
  EXPECT_EQ(rc, EVMPI_OK) << evmpi_last_error();
  if (rc != EVMPI_OK) {
    evmpi_work_release(w);
    return nullptr;
  }
  pg = nullptr; // the callback destroys it
  return w;
}

evmpi_work_t *ExternalLoopTest::CountedBarrier() {
  evmpi_work_t *w = nullptr;
  EXPECT_EQ(evmpi_barrier(pg, &w), EVMPI_OK) << evmpi_last_error();
  if (!w)
    return nullptr;
  int rc = evmpi_work_on_complete(w, [](evmpi_work_t *, void *arg) {
    static_cast<ExternalLoopTest *>(arg)->cb_ran++;
  }, this);
  EXPECT_EQ(rc, EVMPI_OK) << evmpi_last_error();
  if (rc != EVMPI_OK) {
    evmpi_work_release(w);
    return nullptr;
  }
  return w;
}

void MpiTest::TearDown() {
  if (!mpi_ready())
    return;
  int size = evmpi_test_world_size();
  int mine = HasFailure() ? 1 : 0;
  std::vector<int> all(size);
  MPI_Allgather(&mine, 1, MPI_INT, all.data(), 1, MPI_INT, MPI_COMM_WORLD);
  std::string failed;
  for (int r = 0; r < size; r++)
    if (all[r])
      failed += (failed.empty() ? "" : ", ") + std::to_string(r);
  if (!failed.empty() && !mine)
    ADD_FAILURE() << "failed on rank(s) {" << failed << "}";
}

int evmpi_test_main(int argc, char **argv, evmpi_test_mpi_mode_t mode) {
  if (mode != EVMPI_TEST_MPI_LEAVE_TO_EVMPI) {
    int want = mode == EVMPI_TEST_MPI_INIT_MULTIPLE ? MPI_THREAD_MULTIPLE : MPI_THREAD_SERIALIZED;
    int provided = 0;
    MPI_Init_thread(&argc, &argv, want, &provided);
  }
  ::testing::InitGoogleTest(&argc, argv);
  // Without MPI yet (the evmpi-initialises test), read the rank that the
  // launcher gives; Open MPI and MPICH both set one of these.
  int rank = 0;
  if (mpi_ready()) {
    rank = evmpi_test_world_rank();
  } else {
    for (const char *v : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"})
      if (const char *s = std::getenv(v)) {
        rank = std::atoi(s);
        break;
      }
  }
  if (rank != 0 && !std::getenv("EVMPI_TEST_VERBOSE")) {
    auto &listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(rank));
  }
  int rc = RUN_ALL_TESTS();
  int agreed = rc;
  if (mpi_ready())
    MPI_Allreduce(&rc, &agreed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (mode != EVMPI_TEST_MPI_LEAVE_TO_EVMPI && mpi_ready())
    MPI_Finalize();
  return agreed;
}
