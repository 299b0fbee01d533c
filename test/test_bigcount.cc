// test_bigcount.cc: element counts beyond INT_MAX, which PyTorch's ProcessGroupMPI truncated
// silently, in INT_MAX + 4099 one-byte elements per tensor. allreduce and
// broadcast go to MPI in pieces; every other operation moves such a tensor
// as one element of a derived datatype (lib/bigcount.c), which only these
// tests reach: send/recv, gather, scatter, allgather, allgather_base,
// alltoall (lists) and alltoall_base (splits). At most two such tensors
// live in a process at once (4.3 GB at 2 ranks; outputs of size x count
// are filled in place), each test frees its buffers, and results are
// checked at the chunk and INT_MAX boundaries and every 4093rd byte. It
// needs a few seconds per test, so it runs only with EVMPI_TEST_BIG=1
// (.ci/run sets it, at 1 and 2 ranks); otherwise it is skipped with that
// reason. At 1 rank every operation runs against the rank itself.
#include "harness.h"

#include <event2/event.h>

#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

namespace {

const int64_t kCount = (int64_t)INT_MAX + 4099;

struct Free {
  void operator()(uint8_t *p) const { std::free(p); }
};
using Buf = std::unique_ptr<uint8_t, Free>;

// p[i] = (i + shift) % period quickly: one period, then doubling copies.
void fill_mod(uint8_t *p, int64_t n, int period, int shift = 0) {
  int64_t have = n < period ? n : period;
  for (int64_t i = 0; i < have; i++)
    p[i] = (uint8_t)((i + shift) % period);
  while (have < n) {
    int64_t len = (have / period) * period; // whole periods only
    if (len > n - have)
      len = n - have;
    std::memcpy(p + have, p, (size_t)len);
    have += len;
  }
}

// What rank r's tensor holds in the data-movement tests: a period and a
// phase of its own, so that a block from the wrong rank, or at the wrong
// offset, does not match.
int period_of(int r) { return 251 - 2 * (r % 50); }
int shift_of(int r) { return 17 * r + 3; }

// Checks p[0..kCount) against (i + shift) % period at positions that
// straddle the 2^30-element chunk and INT_MAX boundaries and every 4093rd
// element (every page); on a mismatch says where.
::testing::AssertionResult Holds(const uint8_t *p, int period, int shift) {
  const int64_t probes[] = {0, 1, ((int64_t)1 << 30) - 1, (int64_t)1 << 30, (int64_t)INT_MAX - 1,
                            (int64_t)INT_MAX, (int64_t)INT_MAX + 1, kCount - 1};
  auto check = [&](int64_t i) { return p[i] == (uint8_t)((i + shift) % period); };
  for (int64_t i : probes)
    if (!check(i))
      return ::testing::AssertionFailure() << "element " << i << " is " << (int)p[i];
  for (int64_t i = 0; i < kCount; i += 4093)
    if (!check(i))
      return ::testing::AssertionFailure() << "element " << i << " is " << (int)p[i];
  return ::testing::AssertionSuccess();
}

class BigCount : public MpiTest {
protected:
  void SetUp() override {
    const char *big = std::getenv("EVMPI_TEST_BIG");
    if (!big || std::strcmp(big, "1") != 0)
      GTEST_SKIP() << "set EVMPI_TEST_BIG=1 to move 2 GiB tensors beyond INT_MAX elements";
    base = event_base_new();
    ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
    rank = evmpi_pg_rank(pg);
    size = evmpi_pg_size(pg);
  }
  void TearDown() override {
    if (pg)
      evmpi_pg_destroy(pg);
    if (base)
      event_base_free(base);
    MpiTest::TearDown();
  }
  // n bytes, zeroed (fresh pages from calloc cost nothing until touched).
  static Buf Alloc(int64_t n) { return Buf(static_cast<uint8_t *>(std::calloc((size_t)n, 1))); }
  evmpi_tensor_t Flat(uint8_t *p, int64_t n = kCount) { return evmpi_tensor_flat(p, EVMPI_UINT8, n); }
  // Waits for the works and expects them done and successful; prints how
  // long they took (rank 0).
  void Finish(const char *what, evmpi_work_t **w, int n, double t0) {
    ASSERT_TRUE(evmpi_test_run_until_done(base, w, n, 600000)) << what;
    for (int i = 0; i < n; i++) {
      EXPECT_EQ(evmpi_work_status(w[i]), EVMPI_OK) << what << ": " << evmpi_work_error(w[i]);
      evmpi_work_release(w[i]);
    }
    if (rank == 0)
      std::printf("%s of %lld uint8 elements at %d rank(s): %.0f ms\n", what, (long long)kCount,
                  size, evmpi_test_now_ms() - t0);
  }
  struct event_base *base = nullptr;
  evmpi_pg_t *pg = nullptr;
  int rank = 0, size = 1;
};

TEST_F(BigCount, AllreduceBeyondIntMax) {
  Buf buf = Alloc(kCount);
  ASSERT_NE(buf, nullptr);
  // Element i holds (i % 61) on rank 0 and 1 elsewhere.
  if (rank == 0)
    fill_mod(buf.get(), kCount, 61);
  else
    std::memset(buf.get(), 1, (size_t)kCount);
  evmpi_tensor_t t = Flat(buf.get());
  evmpi_work_t *w = nullptr;
  double t0 = evmpi_test_now_ms();
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
  Finish("allreduce", &w, 1, t0);
  // (i % 61) + size - 1 is (i + size - 1) % 61 only below 61 - (size - 1):
  // compare against the sum itself instead.
  const int64_t probes[] = {0, (int64_t)1 << 30, (int64_t)INT_MAX, kCount - 1};
  for (int64_t i : probes)
    ASSERT_EQ(buf.get()[i], (uint8_t)(i % 61 + size - 1)) << "element " << i;
  for (int64_t i = 0; i < kCount; i += 4093)
    ASSERT_EQ(buf.get()[i], (uint8_t)(i % 61 + size - 1)) << "element " << i;
}

TEST_F(BigCount, BroadcastBeyondIntMax) {
  Buf buf = Alloc(kCount);
  ASSERT_NE(buf, nullptr);
  int root = size - 1;
  if (rank == root)
    fill_mod(buf.get(), kCount, 251);
  evmpi_tensor_t t = Flat(buf.get());
  evmpi_work_t *w = nullptr;
  double t0 = evmpi_test_now_ms();
  ASSERT_EQ(evmpi_broadcast(pg, &t, root, &w), EVMPI_OK) << evmpi_last_error();
  Finish("broadcast", &w, 1, t0);
  EXPECT_TRUE(Holds(buf.get(), 251, 0));
}

// Rank 0 sends to rank 1 (at 1 rank, to itself); other ranks take no part.
TEST_F(BigCount, SendRecvBeyondIntMax) {
  int dst = size > 1 ? 1 : 0;
  Buf out, in;
  evmpi_work_t *w[2] = {nullptr, nullptr};
  int n = 0;
  double t0 = evmpi_test_now_ms();
  if (rank == dst) {
    in = Alloc(kCount);
    ASSERT_NE(in, nullptr);
    evmpi_tensor_t tr = Flat(in.get());
    ASSERT_EQ(evmpi_recv(pg, &tr, 0, 9, &w[n++]), EVMPI_OK) << evmpi_last_error();
  }
  if (rank == 0) {
    out = Alloc(kCount);
    ASSERT_NE(out, nullptr);
    fill_mod(out.get(), kCount, period_of(0), shift_of(0));
    evmpi_tensor_t ts = Flat(out.get());
    t0 = evmpi_test_now_ms();
    ASSERT_EQ(evmpi_send(pg, &ts, dst, 9, &w[n++]), EVMPI_OK) << evmpi_last_error();
  }
  Finish("send/recv", w, n, t0);
  out.reset(); // before the check: at 1 rank only one tensor stays
  if (rank == dst)
    EXPECT_TRUE(Holds(in.get(), period_of(0), shift_of(0)));
}

// The root's outputs are one allocation, its own slot its input (in place).
TEST_F(BigCount, GatherBeyondIntMax) {
  int root = size - 1;
  Buf mine = Alloc(rank == root ? kCount * size : kCount);
  ASSERT_NE(mine, nullptr);
  uint8_t *in = rank == root ? mine.get() + (size_t)root * kCount : mine.get();
  fill_mod(in, kCount, period_of(rank), shift_of(rank));
  std::vector<evmpi_tensor_t> outs;
  for (int r = 0; rank == root && r < size; r++)
    outs.push_back(Flat(mine.get() + (size_t)r * kCount));
  evmpi_tensor_t tin = Flat(in);
  evmpi_work_t *w = nullptr;
  double t0 = evmpi_test_now_ms();
  ASSERT_EQ(evmpi_gather(pg, rank == root ? outs.data() : nullptr, &tin, root, &w), EVMPI_OK)
      << evmpi_last_error();
  Finish("gather", &w, 1, t0);
  for (int r = 0; rank == root && r < size; r++)
    EXPECT_TRUE(Holds(mine.get() + (size_t)r * kCount, period_of(r), shift_of(r))) << "from rank " << r;
}

// The root's inputs are one allocation, its own slot its output (in place).
TEST_F(BigCount, ScatterBeyondIntMax) {
  int root = 0;
  Buf mine = Alloc(rank == root ? kCount * size : kCount);
  ASSERT_NE(mine, nullptr);
  std::vector<evmpi_tensor_t> ins;
  for (int r = 0; rank == root && r < size; r++) {
    fill_mod(mine.get() + (size_t)r * kCount, kCount, period_of(r), shift_of(r));
    ins.push_back(Flat(mine.get() + (size_t)r * kCount));
  }
  uint8_t *outp = rank == root ? mine.get() + (size_t)root * kCount : mine.get();
  evmpi_tensor_t tout = Flat(outp);
  evmpi_work_t *w = nullptr;
  double t0 = evmpi_test_now_ms();
  ASSERT_EQ(evmpi_scatter(pg, &tout, rank == root ? ins.data() : nullptr, root, &w), EVMPI_OK)
      << evmpi_last_error();
  Finish("scatter", &w, 1, t0);
  EXPECT_TRUE(Holds(outp, period_of(rank), shift_of(rank)));
}

// Per-rank outputs that lie back to back; the input is this rank's slot.
TEST_F(BigCount, AllgatherBeyondIntMax) {
  Buf all = Alloc(kCount * size);
  ASSERT_NE(all, nullptr);
  uint8_t *slot = all.get() + (size_t)rank * kCount;
  fill_mod(slot, kCount, period_of(rank), shift_of(rank));
  std::vector<evmpi_tensor_t> outs;
  for (int r = 0; r < size; r++)
    outs.push_back(Flat(all.get() + (size_t)r * kCount));
  evmpi_tensor_t tin = Flat(slot);
  evmpi_work_t *w = nullptr;
  double t0 = evmpi_test_now_ms();
  ASSERT_EQ(evmpi_allgather(pg, outs.data(), &tin, &w), EVMPI_OK) << evmpi_last_error();
  Finish("allgather", &w, 1, t0);
  for (int r = 0; r < size; r++)
    EXPECT_TRUE(Holds(all.get() + (size_t)r * kCount, period_of(r), shift_of(r))) << "from rank " << r;
}

TEST_F(BigCount, AllgatherBaseBeyondIntMax) {
  Buf all = Alloc(kCount * size);
  ASSERT_NE(all, nullptr);
  uint8_t *slot = all.get() + (size_t)rank * kCount;
  fill_mod(slot, kCount, period_of(rank), shift_of(rank));
  evmpi_tensor_t tout = Flat(all.get(), kCount * size), tin = Flat(slot);
  evmpi_work_t *w = nullptr;
  double t0 = evmpi_test_now_ms();
  ASSERT_EQ(evmpi_allgather_base(pg, &tout, &tin, &w), EVMPI_OK) << evmpi_last_error();
  Finish("allgather_base", &w, 1, t0);
  for (int r = 0; r < size; r++)
    EXPECT_TRUE(Holds(all.get() + (size_t)r * kCount, period_of(r), shift_of(r))) << "from rank " << r;
}

// Lists: kCount elements to the next rank, none to the others (at 1 rank,
// to itself): one tensor in and one out per rank.
TEST_F(BigCount, AlltoallBeyondIntMax) {
  int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  Buf in = Alloc(kCount), out = Alloc(kCount);
  ASSERT_NE(in, nullptr);
  ASSERT_NE(out, nullptr);
  fill_mod(in.get(), kCount, period_of(rank), shift_of(rank));
  uint8_t none = 0;
  std::vector<evmpi_tensor_t> ins(size, Flat(&none, 0)), outs(size, Flat(&none, 0));
  ins[next] = Flat(in.get());
  outs[prev] = Flat(out.get());
  evmpi_work_t *w = nullptr;
  double t0 = evmpi_test_now_ms();
  ASSERT_EQ(evmpi_alltoall(pg, outs.data(), ins.data(), &w), EVMPI_OK) << evmpi_last_error();
  Finish("alltoall", &w, 1, t0);
  in.reset();
  EXPECT_TRUE(Holds(out.get(), period_of(prev), shift_of(prev)));
}

// One row of kCount elements (a derived row type) to the next rank, by
// splits.
TEST_F(BigCount, AlltoallBaseSplitsBeyondIntMax) {
  int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  Buf in = Alloc(kCount), out = Alloc(kCount);
  ASSERT_NE(in, nullptr);
  ASSERT_NE(out, nullptr);
  fill_mod(in.get(), kCount, period_of(rank), shift_of(rank));
  evmpi_tensor_t ti = Flat(in.get()), to = Flat(out.get());
  ti.ndim = to.ndim = 2;
  ti.shape[0] = to.shape[0] = 1;
  ti.shape[1] = to.shape[1] = kCount;
  std::vector<int64_t> isplit(size, 0), osplit(size, 0);
  isplit[next] = 1;
  osplit[prev] = 1;
  evmpi_work_t *w = nullptr;
  double t0 = evmpi_test_now_ms();
  ASSERT_EQ(evmpi_alltoall_base(pg, &to, &ti, osplit.data(), isplit.data(), &w), EVMPI_OK)
      << evmpi_last_error();
  Finish("alltoall_base", &w, 1, t0);
  in.reset();
  EXPECT_TRUE(Holds(out.get(), period_of(prev), shift_of(prev)));
}

} // namespace

int main(int argc, char **argv) { return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE); }
