// test_ops.cc: every collective beyond allreduce/broadcast/barrier, checked
// against values computed locally: reduce, allgather (list and flat, in
// place too), allgather_coalesced, gather, scatter, reduce_scatter,
// allreduce_coalesced, alltoall_base (equal and uneven splits) and
// alltoall (lists with lengths that differ per peer).
#include "harness.h"

#include <event2/event.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace {

class Ops : public MpiTest {
protected:
  void SetUp() override {
    base = event_base_new();
    ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
    rank = evmpi_pg_rank(pg);
    size = evmpi_pg_size(pg);
  }
  void TearDown() override {
    evmpi_pg_destroy(pg);
    event_base_free(base);
    MpiTest::TearDown();
  }
  // Waits for w on the loop; expects success and the given name.
  void Finish(evmpi_work_t *w, const char *name) {
    ASSERT_NE(w, nullptr);
    EXPECT_STREQ(evmpi_work_name(w), name);
    ASSERT_TRUE(evmpi_test_run_until_done(base, &w, 1, EVMPI_TEST_TIMEOUT_MS));
    EXPECT_EQ(evmpi_work_status(w), EVMPI_OK) << evmpi_work_error(w);
  }
  struct event_base *base = nullptr;
  evmpi_pg_t *pg = nullptr;
  int rank = 0, size = 1;
};

evmpi_tensor_t flat(std::vector<int32_t> &v) {
  return evmpi_tensor_flat(v.data(), EVMPI_INT32, (int64_t)v.size());
}

TEST_F(Ops, ReduceOnEveryRoot) {
  for (int root = 0; root < size; root++) {
    std::vector<int32_t> v(33, rank + 1);
    evmpi_tensor_t t = flat(v);
    evmpi_work_t *w = nullptr;
    ASSERT_EQ(evmpi_reduce(pg, &t, EVMPI_SUM, root, &w), EVMPI_OK) << evmpi_last_error();
    Finish(w, "mpi:reduce");
    for (int32_t x : v)
      ASSERT_EQ(x, rank == root ? size * (size + 1) / 2 : rank + 1) << "root " << root;
    evmpi_work_release(w);
  }
}

TEST_F(Ops, ReduceAvgOnRootOnly) {
  std::vector<double> v(8, 2.0 * rank);
  evmpi_tensor_t t = evmpi_tensor_flat(v.data(), EVMPI_FLOAT64, 8);
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_reduce(pg, &t, EVMPI_AVG, 0, &w), EVMPI_OK) << evmpi_last_error();
  Finish(w, "mpi:reduce");
  for (double x : v)
    EXPECT_DOUBLE_EQ(x, rank == 0 ? (double)(size - 1) : 2.0 * rank);
  evmpi_work_release(w);
}

TEST_F(Ops, AllgatherIntoSeparateAndAdjacentOutputs) {
  std::vector<int32_t> in(5);
  for (int i = 0; i < 5; i++)
    in[i] = rank * 100 + i;
  // Separate buffers (packed path) and one array carved per rank (direct).
  std::vector<std::vector<int32_t>> sep(size, std::vector<int32_t>(5, -1));
  std::vector<int32_t> carved(5 * size, -1);
  for (int pass = 0; pass < 2; pass++) {
    std::vector<evmpi_tensor_t> outs(size);
    for (int r = 0; r < size; r++)
      outs[r] = pass == 0 ? flat(sep[r]) : evmpi_tensor_flat(&carved[5 * r], EVMPI_INT32, 5);
    evmpi_tensor_t ti = flat(in);
    evmpi_work_t *w = nullptr;
    ASSERT_EQ(evmpi_allgather(pg, outs.data(), &ti, &w), EVMPI_OK) << evmpi_last_error();
    outs.clear(); // descriptor arrays may go as soon as the call returns
    Finish(w, "mpi:all_gather");
    const evmpi_tensor_t *res;
    ASSERT_EQ(evmpi_work_result(w, &res), (size_t)size);
    for (int r = 0; r < size; r++)
      for (int i = 0; i < 5; i++)
        ASSERT_EQ(static_cast<int32_t *>(res[r].data)[i], r * 100 + i) << "pass " << pass;
    evmpi_work_release(w);
  }
}

TEST_F(Ops, AllgatherBaseFlatAndInPlace) {
  std::vector<int32_t> in(3, rank), out(3 * size, -1);
  evmpi_tensor_t ti = flat(in), to = flat(out);
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_allgather_base(pg, &to, &ti, &w), EVMPI_OK) << evmpi_last_error();
  Finish(w, "mpi:_allgather_base");
  for (int r = 0; r < size; r++)
    for (int i = 0; i < 3; i++)
      ASSERT_EQ(out[3 * r + i], r);
  evmpi_work_release(w);
  // In place: this rank's input is its own slot of the output.
  std::vector<int32_t> buf(2 * size, -1);
  buf[2 * rank] = buf[2 * rank + 1] = 7 * rank;
  evmpi_tensor_t mine = evmpi_tensor_flat(&buf[2 * rank], EVMPI_INT32, 2);
  evmpi_tensor_t all = flat(buf);
  ASSERT_EQ(evmpi_allgather_base(pg, &all, &mine, &w), EVMPI_OK) << evmpi_last_error();
  Finish(w, "mpi:_allgather_base");
  for (int r = 0; r < size; r++)
    ASSERT_EQ(buf[2 * r] + buf[2 * r + 1], 14 * r);
  evmpi_work_release(w);
}

TEST_F(Ops, AllgatherCoalescedMixedDtypes) {
  int32_t a = rank + 1;
  double b[2] = {rank * 0.5, -rank * 0.5};
  evmpi_tensor_t ins[2] = {evmpi_tensor_flat(&a, EVMPI_INT32, 1),
                           evmpi_tensor_flat(b, EVMPI_FLOAT64, 2)};
  std::vector<int32_t> oa(size, -1);
  std::vector<double> ob(2 * size, -1);
  std::vector<evmpi_tensor_t> outs(2 * size);
  for (int r = 0; r < size; r++) {
    outs[r] = evmpi_tensor_flat(&oa[r], EVMPI_INT32, 1);
    outs[size + r] = evmpi_tensor_flat(&ob[2 * r], EVMPI_FLOAT64, 2);
  }
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_allgather_coalesced(pg, outs.data(), ins, 2, &w), EVMPI_OK) << evmpi_last_error();
  Finish(w, "mpi:allgather_coalesced");
  for (int r = 0; r < size; r++) {
    EXPECT_EQ(oa[r], r + 1);
    EXPECT_EQ(ob[2 * r], r * 0.5);
    EXPECT_EQ(ob[2 * r + 1], -r * 0.5);
  }
  const evmpi_tensor_t *res;
  EXPECT_EQ(evmpi_work_result(w, &res), (size_t)(2 * size));
  evmpi_work_release(w);
}

TEST_F(Ops, GatherOnEveryRoot) {
  for (int root = 0; root < size; root++) {
    std::vector<int32_t> in(4, rank * 10 + root);
    std::vector<std::vector<int32_t>> bufs(size, std::vector<int32_t>(4, -1));
    std::vector<evmpi_tensor_t> outs(size);
    for (int r = 0; r < size; r++)
      outs[r] = flat(bufs[r]);
    evmpi_tensor_t ti = flat(in);
    evmpi_work_t *w = nullptr;
    ASSERT_EQ(evmpi_gather(pg, rank == root ? outs.data() : nullptr, &ti, root, &w), EVMPI_OK)
        << evmpi_last_error();
    Finish(w, "mpi:gather");
    const evmpi_tensor_t *res;
    EXPECT_EQ(evmpi_work_result(w, &res), rank == root ? (size_t)size : 0u);
    for (int r = 0; r < size; r++)
      for (int32_t x : bufs[r])
        ASSERT_EQ(x, rank == root ? r * 10 + root : -1);
    evmpi_work_release(w);
  }
}

TEST_F(Ops, ScatterOnEveryRootAndInPlace) {
  for (int root = 0; root < size; root++) {
    std::vector<std::vector<int32_t>> bufs(size);
    std::vector<evmpi_tensor_t> ins(size);
    for (int r = 0; r < size; r++) {
      bufs[r].assign(3, r * 1000 + root);
      ins[r] = flat(bufs[r]);
    }
    std::vector<int32_t> out(3, -1);
    // On the root, receive in place into its own input slot half the time.
    bool in_place = rank == root && root % 2 == 1;
    evmpi_tensor_t to = in_place ? ins[root] : flat(out);
    evmpi_work_t *w = nullptr;
    ASSERT_EQ(evmpi_scatter(pg, &to, rank == root ? ins.data() : nullptr, root, &w), EVMPI_OK)
        << evmpi_last_error();
    Finish(w, "mpi:scatter");
    const int32_t *got = in_place ? bufs[root].data() : out.data();
    for (int i = 0; i < 3; i++)
      ASSERT_EQ(got[i], rank * 1000 + root);
    evmpi_work_release(w);
  }
}

TEST_F(Ops, ReduceScatterSumAndMax) {
  std::vector<std::vector<int32_t>> in(size, std::vector<int32_t>(6));
  std::vector<evmpi_tensor_t> ins(size);
  for (int r = 0; r < size; r++) {
    for (int i = 0; i < 6; i++)
      in[r][i] = (rank + 1) * (r + 1) + i;
    ins[r] = flat(in[r]);
  }
  std::vector<int32_t> out(6, -1);
  evmpi_tensor_t to = flat(out);
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_reduce_scatter(pg, &to, ins.data(), EVMPI_SUM, &w), EVMPI_OK)
      << evmpi_last_error();
  Finish(w, "mpi:reduce_scatter");
  int tri = size * (size + 1) / 2;
  for (int i = 0; i < 6; i++)
    ASSERT_EQ(out[i], tri * (rank + 1) + size * i);
  evmpi_work_release(w);
  ASSERT_EQ(evmpi_reduce_scatter(pg, &to, ins.data(), EVMPI_MAX, &w), EVMPI_OK);
  Finish(w, "mpi:reduce_scatter");
  for (int i = 0; i < 6; i++)
    ASSERT_EQ(out[i], size * (rank + 1) + i);
  evmpi_work_release(w);
}

TEST_F(Ops, AllreduceCoalescedGroupsByDtype) {
  int32_t a[3] = {rank, rank, rank};
  float b[2] = {1.0f, 2.0f};
  int32_t c = 1;
  double d = rank;
  evmpi_tensor_t ts[4] = {evmpi_tensor_flat(a, EVMPI_INT32, 3), evmpi_tensor_flat(b, EVMPI_FLOAT32, 2),
                          evmpi_tensor_flat(&c, EVMPI_INT32, 1), evmpi_tensor_flat(&d, EVMPI_FLOAT64, 1)};
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_allreduce_coalesced(pg, ts, 4, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
  Finish(w, "mpi:allreduce_coalesced");
  int ranksum = size * (size - 1) / 2;
  for (int32_t x : a)
    EXPECT_EQ(x, ranksum);
  EXPECT_EQ(b[0], 1.0f * size);
  EXPECT_EQ(b[1], 2.0f * size);
  EXPECT_EQ(c, size);
  EXPECT_EQ(d, ranksum);
  const evmpi_tensor_t *res;
  EXPECT_EQ(evmpi_work_result(w, &res), 4u);
  evmpi_work_release(w);
  // An op undefined on one of the dtypes refuses the whole call.
  EXPECT_EQ(evmpi_allreduce_coalesced(pg, ts, 4, EVMPI_BAND, &w), EVMPI_ERR_UNSUPPORTED);
  EXPECT_NE(std::strstr(evmpi_last_error(), "tensors"), nullptr);
  EXPECT_EQ(w, nullptr);
}

TEST_F(Ops, AlltoallBaseEqualSplit) {
  // 2 rows per peer, rows of 3 elements: row j of block r says who sent it.
  int rows = 2 * size;
  std::vector<int32_t> in(rows * 3), out(rows * 3, -1);
  for (int r = 0; r < size; r++)
    for (int j = 0; j < 6; j++)
      in[r * 6 + j] = rank * 10000 + r * 100 + j;
  evmpi_tensor_t ti = flat(in), to = flat(out);
  ti.ndim = to.ndim = 2;
  ti.shape[0] = to.shape[0] = rows;
  ti.shape[1] = to.shape[1] = 3;
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_alltoall_base(pg, &to, &ti, nullptr, nullptr, &w), EVMPI_OK)
      << evmpi_last_error();
  Finish(w, "mpi:all_to_all");
  for (int r = 0; r < size; r++)
    for (int j = 0; j < 6; j++)
      ASSERT_EQ(out[r * 6 + j], r * 10000 + rank * 100 + j);
  evmpi_work_release(w);
}

TEST_F(Ops, AlltoallBaseUnevenSplits) {
  // Rank s sends (s + d) % 3 rows of 2 elements to rank d.
  auto rows = [](int s, int d) { return (int64_t)((s + d) % 3); };
  std::vector<int64_t> isplit(size), osplit(size);
  int64_t irows = 0, orows = 0;
  for (int r = 0; r < size; r++) {
    isplit[r] = rows(rank, r);
    osplit[r] = rows(r, rank);
    irows += isplit[r];
    orows += osplit[r];
  }
  std::vector<int32_t> in(irows * 2 + 1), out(orows * 2 + 1, -1);
  int64_t at = 0;
  for (int d = 0; d < size; d++)
    for (int64_t j = 0; j < isplit[d] * 2; j++)
      in[at++] = rank * 1000 + d * 10 + (int32_t)j;
  evmpi_tensor_t ti = flat(in), to = flat(out);
  ti.ndim = to.ndim = 2;
  ti.shape[0] = irows;
  to.shape[0] = orows;
  ti.shape[1] = to.shape[1] = 2;
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_alltoall_base(pg, &to, &ti, osplit.data(), isplit.data(), &w), EVMPI_OK)
      << evmpi_last_error();
  Finish(w, "mpi:all_to_all");
  at = 0;
  for (int s = 0; s < size; s++)
    for (int64_t j = 0; j < osplit[s] * 2; j++)
      ASSERT_EQ(out[at++], s * 1000 + rank * 10 + (int32_t)j) << "from " << s;
  evmpi_work_release(w);
}

TEST_F(Ops, AlltoallListLengthsDifferPerPeer) {
  // Rank s sends s + d + 1 elements to rank d.
  std::vector<std::vector<int64_t>> in(size), out(size);
  std::vector<evmpi_tensor_t> ins(size), outs(size);
  for (int r = 0; r < size; r++) {
    in[r].assign(rank + r + 1, rank * 100 + r);
    out[r].assign(r + rank + 1, -1);
    ins[r] = evmpi_tensor_flat(in[r].data(), EVMPI_INT64, (int64_t)in[r].size());
    outs[r] = evmpi_tensor_flat(out[r].data(), EVMPI_INT64, (int64_t)out[r].size());
  }
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_alltoall(pg, outs.data(), ins.data(), &w), EVMPI_OK) << evmpi_last_error();
  Finish(w, "mpi:all_to_all");
  for (int r = 0; r < size; r++)
    for (int64_t x : out[r])
      ASSERT_EQ(x, r * 100 + rank);
  evmpi_work_release(w);
  // User messages on the group do not mix with alltoall's own.
  int32_t v = rank, got = -1;
  evmpi_tensor_t tv = evmpi_tensor_flat(&v, EVMPI_INT32, 1), tg = evmpi_tensor_flat(&got, EVMPI_INT32, 1);
  evmpi_work_t *p2p[2];
  ASSERT_EQ(evmpi_recv(pg, &tg, (rank + size - 1) % size, 0, &p2p[0]), EVMPI_OK);
  ASSERT_EQ(evmpi_alltoall(pg, outs.data(), ins.data(), &w), EVMPI_OK);
  ASSERT_EQ(evmpi_send(pg, &tv, (rank + 1) % size, 0, &p2p[1]), EVMPI_OK);
  Finish(w, "mpi:all_to_all");
  ASSERT_TRUE(evmpi_test_run_until_done(base, p2p, 2, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(got, (rank + size - 1) % size);
  for (auto *x : p2p)
    evmpi_work_release(x);
  evmpi_work_release(w);
}

} // namespace

int main(int argc, char **argv) { return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE); }
