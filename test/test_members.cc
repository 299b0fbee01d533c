// test_members.cc: evmpi_pg_create_members, a group created by its members
// only. The ranks left out never call it: they wait, with a deadline, for
// a message that the members send once their group exists and has run an
// allreduce; a creation that needed them would leave the members inside
// it and the wait would fail (and abort the job rather than hang it).
#include "harness.h"

#include <event2/event.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <vector>

namespace {

class Members : public MpiTest {};

// The tag of the "group made" messages, on MPI_COMM_WORLD.
const int kDoneTag = 4242;

bool member_of(const std::vector<int> &ranks, int rank, int *index) {
  for (size_t i = 0; i < ranks.size(); i++)
    if (ranks[i] == rank) {
      *index = (int)i;
      return true;
    }
  return false;
}

// A member: creates the group, checks rank and size, allreduces the world
// ranks of the members; the first member then tells every non-member.
void run_member(const std::vector<int> &ranks, int index) {
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create_members(base, ranks.data(), (int)ranks.size(), &pg), EVMPI_OK)
      << evmpi_last_error();
  ASSERT_NE(pg, nullptr);
  evmpi_test_check_subgroup(base, pg, ranks, index);
  evmpi_pg_destroy(pg);
  event_base_free(base);
}

// A non-member: does not call; waits until the first member says the
// group was made and used.
void wait_as_outsider(const std::vector<int> &ranks) {
  int got = 0;
  MPI_Request req;
  ASSERT_EQ(MPI_Irecv(&got, 1, MPI_INT, ranks[0], kDoneTag, MPI_COMM_WORLD, &req), MPI_SUCCESS);
  double until = evmpi_test_now_ms() + EVMPI_TEST_TIMEOUT_MS;
  int flag = 0;
  while (!flag && evmpi_test_now_ms() < until) {
    MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
    if (!flag) {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, nullptr);
    }
  }
  if (!flag) {
    // The members are stuck in a creation that waits for this rank: the
    // job cannot agree on anything any more, so it ends here.
    std::fprintf(stderr, "[rank %d] FAIL: the members did not make their group within %d ms "
                 "without this rank\n", evmpi_test_world_rank(), EVMPI_TEST_TIMEOUT_MS);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  EXPECT_EQ(got, (int)ranks.size());
}

void tell_outsiders(const std::vector<int> &ranks) {
  int n = (int)ranks.size(), dummy;
  for (int r = 0; r < evmpi_test_world_size(); r++)
    if (!member_of(ranks, r, &dummy))
      MPI_Send(&n, 1, MPI_INT, r, kDoneTag, MPI_COMM_WORLD);
}

void create_among(const std::vector<int> &ranks) {
  int me = evmpi_test_world_rank(), index = -1;
  if (member_of(ranks, me, &index)) {
    run_member(ranks, index);
    if (index == 0)
      tell_outsiders(ranks);
  } else {
    wait_as_outsider(ranks);
  }
}

// The last rank and then all but rank 0, listed in reverse: the others
// never call.
TEST_F(Members, NonMembersDoNotCall) {
  int size = evmpi_test_world_size();
  create_among({size - 1});
  std::vector<int> rest;
  for (int r = size - 1; r >= 1; r--)
    rest.push_back(r);
  if (rest.empty())
    rest.push_back(0);
  create_among(rest);
}

// Evens and odds make their groups at the same time, each by itself.
TEST_F(Members, DisjointGroupsAtOnce) {
  int me = evmpi_test_world_rank(), size = evmpi_test_world_size();
  std::vector<int> mine;
  for (int r = me % 2; r < size; r += 2)
    mine.push_back(r);
  int index = -1;
  ASSERT_TRUE(member_of(mine, me, &index));
  run_member(mine, index);
}

// The whole world through the members' path, listed in order.
TEST_F(Members, EveryRankAsMembers) {
  std::vector<int> all;
  for (int r = 0; r < evmpi_test_world_size(); r++)
    all.push_back(r);
  run_member(all, evmpi_test_world_rank());
}

// Bad input fails on the calling rank alone (nobody else calls), with
// *pg NULL and a message naming the argument.
TEST_F(Members, BadInputIsRefused) {
  int me = evmpi_test_world_rank(), size = evmpi_test_world_size();
  struct event_base *base = event_base_new();
  struct Case {
    std::vector<int> ranks;
    int nranks;
    bool null_ranks;
    const char *says;
  };
  std::vector<Case> cases = {
      {{me}, 1, true, "ranks is NULL"},
      {{me}, 0, false, "nranks 0 is outside"},
      {{me}, size + 1, false, "nranks"},
      {{size}, 1, false, "is outside 0.."},
      {{-1}, 1, false, "ranks[0] = -1"},
  };
  if (size > 1) {
    cases.push_back({{me, me}, 2, false, "appears twice"});
    cases.push_back({{me, -1}, 2, false, "ranks[1] = -1"});
    cases.push_back({{(me + 1) % size}, 1, false, "is not among"});
  }
  for (const Case &c : cases) {
    evmpi_pg_t *pg = reinterpret_cast<evmpi_pg_t *>(1);
    std::vector<int> r = c.ranks;
    r.resize(r.size() + 2, 0); // nranks may claim more than listed
    EXPECT_EQ(evmpi_pg_create_members(base, c.null_ranks ? nullptr : r.data(), c.nranks, &pg),
              EVMPI_ERR_INVALID)
        << c.says;
    EXPECT_EQ(pg, nullptr) << c.says;
    EXPECT_NE(std::strstr(evmpi_last_error(), "pg_create_members"), nullptr) << evmpi_last_error();
    EXPECT_NE(std::strstr(evmpi_last_error(), c.says), nullptr) << evmpi_last_error();
  }
  EXPECT_EQ(evmpi_pg_create_members(base, &me, 1, nullptr), EVMPI_ERR_INVALID);
  EXPECT_NE(std::strstr(evmpi_last_error(), "pg is NULL"), nullptr) << evmpi_last_error();
  event_base_free(base);
}

} // namespace

int main(int argc, char **argv) { return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE); }
