// test_bigcount.cc: element counts beyond INT_MAX, which the seed truncated
// silently: one reduction (allreduce) and one pure data movement
// (broadcast) of INT_MAX + 4099 one-byte elements. Needs about 2.2 GB per
// rank and a few seconds, so it runs only with EVMPI_TEST_BIG=1 (.ci/run
// sets it, at 1 and 2 ranks); otherwise it is skipped with that reason.
#include "harness.h"

#include <event2/event.h>

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace {

const int64_t kCount = (int64_t)INT_MAX + 4099;

class BigCount : public MpiTest {
protected:
  void SetUp() override {
    const char *big = std::getenv("EVMPI_TEST_BIG");
    if (!big || std::strcmp(big, "1") != 0)
      GTEST_SKIP() << "set EVMPI_TEST_BIG=1 to move 2 GiB per rank beyond INT_MAX elements";
    base = event_base_new();
    ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
    buf.reset(static_cast<uint8_t *>(std::malloc((size_t)kCount)));
    ASSERT_NE(buf, nullptr);
  }
  void TearDown() override {
    if (pg)
      evmpi_pg_destroy(pg);
    if (base)
      event_base_free(base);
    MpiTest::TearDown();
  }
  // Positions that straddle the chunk and INT_MAX boundaries.
  static bool spot_check(const uint8_t *p, uint8_t (*want)(int64_t), int64_t *bad) {
    const int64_t probes[] = {0, 1, ((int64_t)1 << 30) - 1, (int64_t)1 << 30, (int64_t)INT_MAX - 1,
                              (int64_t)INT_MAX, (int64_t)INT_MAX + 1, kCount - 1};
    for (int64_t i : probes)
      if (p[i] != want(i)) {
        *bad = i;
        return false;
      }
    for (int64_t i = 0; i < kCount; i += 4093)
      if (p[i] != want(i)) {
        *bad = i;
        return false;
      }
    return true;
  }
  struct Free {
    void operator()(uint8_t *p) const { std::free(p); }
  };
  struct event_base *base = nullptr;
  evmpi_pg_t *pg = nullptr;
  std::unique_ptr<uint8_t, Free> buf;
};

int g_size = 1;

// Fills p[i] = i % period quickly: one period, then doubling copies.
void fill_mod(uint8_t *p, int64_t n, int period) {
  int64_t have = n < period ? n : period;
  for (int64_t i = 0; i < have; i++)
    p[i] = (uint8_t)i;
  while (have < n) {
    int64_t len = (have / period) * period; // whole periods only
    if (len > n - have)
      len = n - have;
    std::memcpy(p + have, p, (size_t)len);
    have += len;
  }
}

TEST_F(BigCount, AllreduceBeyondIntMax) {
  int rank = evmpi_pg_rank(pg);
  g_size = evmpi_pg_size(pg);
  // Element i holds (i % 61) on rank 0 and 1 elsewhere.
  if (rank == 0)
    fill_mod(buf.get(), kCount, 61);
  else
    std::memset(buf.get(), 1, (size_t)kCount);
  evmpi_tensor_t t = evmpi_tensor_flat(buf.get(), EVMPI_UINT8, kCount);
  evmpi_work_t *w = nullptr;
  double t0 = evmpi_test_now_ms();
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
  ASSERT_TRUE(evmpi_test_run_until_done(base, &w, 1, 600000));
  ASSERT_EQ(evmpi_work_status(w), EVMPI_OK) << evmpi_work_error(w);
  if (rank == 0)
    std::printf("allreduce of %lld uint8 elements: %.0f ms\n", (long long)kCount,
                evmpi_test_now_ms() - t0);
  evmpi_work_release(w);
  int64_t bad = -1;
  EXPECT_TRUE(spot_check(buf.get(), [](int64_t i) { return (uint8_t)(i % 61 + g_size - 1); }, &bad))
      << "element " << bad << " is " << (int)buf.get()[bad];
}

TEST_F(BigCount, BroadcastBeyondIntMax) {
  int rank = evmpi_pg_rank(pg), size = evmpi_pg_size(pg);
  int root = size - 1;
  if (rank == root)
    fill_mod(buf.get(), kCount, 251);
  else
    std::memset(buf.get(), 0, (size_t)kCount);
  evmpi_tensor_t t = evmpi_tensor_flat(buf.get(), EVMPI_UINT8, kCount);
  evmpi_work_t *w = nullptr;
  double t0 = evmpi_test_now_ms();
  ASSERT_EQ(evmpi_broadcast(pg, &t, root, &w), EVMPI_OK) << evmpi_last_error();
  ASSERT_TRUE(evmpi_test_run_until_done(base, &w, 1, 600000));
  ASSERT_EQ(evmpi_work_status(w), EVMPI_OK) << evmpi_work_error(w);
  if (rank == 0)
    std::printf("broadcast of %lld uint8 elements: %.0f ms\n", (long long)kCount,
                evmpi_test_now_ms() - t0);
  evmpi_work_release(w);
  int64_t bad = -1;
  EXPECT_TRUE(spot_check(buf.get(), [](int64_t i) { return (uint8_t)(i % 251); }, &bad))
      << "element " << bad << " is " << (int)buf.get()[bad];
}

} // namespace

int main(int argc, char **argv) { return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE); }
