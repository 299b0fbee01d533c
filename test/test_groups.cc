// test_groups.cc: groups over the world, over subsets of ranks (left-out
// ranks get NULL), over the application's communicator; several groups on
// one loop.
#include "harness.h"

#include <event2/event.h>

#include <cstdint>
#include <vector>

namespace {

class Groups : public MpiTest {};

TEST_F(Groups, WorldGroupMatchesWorld) {
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  ASSERT_NE(pg, nullptr);
  EXPECT_EQ(evmpi_pg_rank(pg), evmpi_test_world_rank());
  EXPECT_EQ(evmpi_pg_size(pg), evmpi_test_world_size());
  EXPECT_STREQ(evmpi_pg_backend_name(pg), "mpi");
  evmpi_pg_destroy(pg);
  event_base_free(base);
}

// Every subset shape the world size allows: the odd ranks, the last rank
// alone, and all ranks listed in reverse (which renumbers them).
TEST_F(Groups, SubsetsGiveNullToLeftOutRanks) {
  struct event_base *base = event_base_new();
  int wrank = evmpi_test_world_rank(), wsize = evmpi_test_world_size();
  std::vector<std::vector<int>> subsets;
  std::vector<int> odd, reversed;
  for (int r = 1; r < wsize; r += 2)
    odd.push_back(r);
  for (int r = wsize - 1; r >= 0; r--)
    reversed.push_back(r);
  if (!odd.empty())
    subsets.push_back(odd);
  subsets.push_back({wsize - 1});
  subsets.push_back(reversed);
  for (const auto &ranks : subsets) {
    evmpi_pg_t *pg = reinterpret_cast<evmpi_pg_t *>(1);
    ASSERT_EQ(evmpi_pg_create(base, ranks.data(), (int)ranks.size(), &pg), EVMPI_OK)
        << evmpi_last_error();
    int index = -1;
    for (size_t i = 0; i < ranks.size(); i++)
      if (ranks[i] == wrank)
        index = (int)i;
    if (index < 0) {
      EXPECT_EQ(pg, nullptr) << "rank " << wrank << " is not in the subset";
      continue;
    }
    ASSERT_NE(pg, nullptr);
    // An allreduce over the subset sums world ranks of its members only.
    evmpi_test_check_subgroup(base, pg, ranks, index);
    evmpi_pg_destroy(pg);
  }
  event_base_free(base);
}

TEST_F(Groups, FromApplicationCommunicator) {
  // Split the world into evens and odds; each half gets its own group.
  int wrank = evmpi_test_world_rank();
  MPI_Comm half;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, wrank % 2, wrank, &half), MPI_SUCCESS);
  int hrank, hsize;
  MPI_Comm_rank(half, &hrank);
  MPI_Comm_size(half, &hsize);
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create_from_comm(base, half, &pg), EVMPI_OK) << evmpi_last_error();
  ASSERT_NE(pg, nullptr);
  EXPECT_EQ(evmpi_pg_rank(pg), hrank);
  EXPECT_EQ(evmpi_pg_size(pg), hsize);
  int32_t v = 1;
  evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_INT32, 1);
  evmpi_work_t *w;
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK);
  ASSERT_TRUE(evmpi_test_run_until_done(base, &w, 1, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(v, hsize);
  evmpi_work_release(w);
  evmpi_pg_destroy(pg);
  // The application's communicator is still its own and still works.
  int one = 1, sum = 0;
  ASSERT_EQ(MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, half), MPI_SUCCESS);
  EXPECT_EQ(sum, hsize);
  MPI_Comm_free(&half);
  event_base_free(base);
}

// Two groups on one loop: each keeps its own order and its own traffic.
TEST_F(Groups, TwoGroupsShareALoop) {
  struct event_base *base = event_base_new();
  evmpi_pg_t *a = nullptr, *b = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &a), EVMPI_OK);
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &b), EVMPI_OK);
  std::vector<int32_t> va(50, 1), vb(50, 2);
  std::vector<evmpi_work_t *> ws;
  for (int i = 0; i < 50; i++) {
    evmpi_tensor_t ta = evmpi_tensor_flat(&va[i], EVMPI_INT32, 1);
    evmpi_tensor_t tb = evmpi_tensor_flat(&vb[i], EVMPI_INT32, 1);
    evmpi_work_t *w;
    ASSERT_EQ(evmpi_allreduce(a, &ta, EVMPI_SUM, &w), EVMPI_OK);
    ws.push_back(w);
    ASSERT_EQ(evmpi_allreduce(b, &tb, EVMPI_MAX, &w), EVMPI_OK);
    ws.push_back(w);
  }
  ASSERT_TRUE(evmpi_test_run_until_done(base, ws.data(), (int)ws.size(), EVMPI_TEST_TIMEOUT_MS));
  for (int i = 0; i < 50; i++) {
    EXPECT_EQ(va[i], evmpi_pg_size(a));
    EXPECT_EQ(vb[i], 2);
  }
  for (auto *w : ws)
    evmpi_work_release(w);
  evmpi_pg_destroy(a);
  evmpi_pg_destroy(b);
  event_base_free(base);
}

} // namespace

int main(int argc, char **argv) { return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE); }
