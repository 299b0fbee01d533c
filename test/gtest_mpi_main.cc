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

TestLoop::TestLoop() : base(event_base_new()) {
  EXPECT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
}

TestLoop::~TestLoop() {
  evmpi_pg_destroy(pg);
  event_base_free(base);
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
