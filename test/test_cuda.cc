// test_cuda.cc: CUDA device tensors. Every operation runs on device buffers
// and its result is compared with the same operation on host buffers, on
// each path: staged whole, staged in many small pipeline chunks, and direct
// (device pointers to a CUDA-aware MPI). Then the refusals: mixed devices,
// bad device indices, host memory labelled as device memory, staging turned
// off, bad settings; and failing copies.
//
// Built twice: test_cuda against the real CUDA runtime (its tests skip,
// saying why, where there is no GPU; NoDevice checks the refusal then), and
// test_cuda_sim against test/fake_cuda.c, a simulated runtime whose device
// memory the host cannot touch and whose streams really run asynchronously.
#include "harness.h"

#include <cuda_runtime_api.h>
#include <event2/event.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <unistd.h>
#include <memory>
#include <string>
#include <vector>

#ifdef EVMPI_TEST_FAKE_CUDA
#include "fake_cuda.h"
#endif

namespace {

int DeviceCount(std::string *why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why)
      *why = std::string("no CUDA device: cudaGetDeviceCount: ") + cudaGetErrorString(e);
    cudaGetLastError();
    return 0;
  }
  if (n == 0 && why)
    *why = "no CUDA device";
  return n;
}

// A device allocation on cuda:0 (or dev) and its copies.
struct DevBuf {
  void *p = nullptr;
  size_t bytes = 0;
  DevBuf(size_t b, int dev = 0) : bytes(b) {
    cudaSetDevice(dev);
    EXPECT_EQ(cudaMalloc(&p, b ? b : 1), cudaSuccess);
    cudaSetDevice(0);
  }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf &) = delete;
  DevBuf &operator=(const DevBuf &) = delete;
  template <class T> void Up(const std::vector<T> &v) {
    ASSERT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  template <class T> std::vector<T> Down(size_t n, size_t off = 0) const {
    std::vector<T> v(n);
    EXPECT_EQ(cudaMemcpy(v.data(), (char *)p + off * sizeof(T), n * sizeof(T),
                         cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
};

evmpi_tensor_t OnDevice(void *p, evmpi_dtype_t dt, int64_t n, int dev = 0) {
  evmpi_tensor_t t = evmpi_tensor_flat(p, dt, n);
  t.device.type = EVMPI_DEVICE_CUDA;
  t.device.index = dev;
  return t;
}

enum class Path { Staged, Chunked, Direct };

const char *PathName(Path p) {
  return p == Path::Staged ? "Staged" : p == Path::Chunked ? "Chunked" : "Direct";
}

// Sets the environment for a path; the group reads it when created.
void SetPathEnv(Path p) {
  unsetenv("EVMPI_CUDA_STAGING");
  unsetenv("EVMPI_CUDA_CHUNK");
  unsetenv("EVMPI_CUDA_AWARE");
  unsetenv("EVMPI_PIECE");
  if (p != Path::Direct)
    setenv("EVMPI_CUDA_AWARE", "0", 1);
  if (p == Path::Chunked) {
    // 16 int32 per chunk: many chunks, the ring wraps. A chunk is a whole
    // number of broadcast pieces (4 pieces; 4 MiB by default), so the
    // piece is made 16 bytes.
    setenv("EVMPI_CUDA_CHUNK", "64", 1);
    setenv("EVMPI_PIECE", "16", 1);
  }
#ifdef EVMPI_TEST_FAKE_CUDA
  if (p == Path::Direct)
    setenv("EVMPI_CUDA_AWARE", "1", 1); // the simulated device memory is opened to MPI below
  fake_cuda_host_access(p == Path::Direct);
#endif
}

class Cuda : public MpiTest, public ::testing::WithParamInterface<Path> {
protected:
  void SetUp() override {
    std::string why;
    if (DeviceCount(&why) == 0)
      GTEST_SKIP() << why;
    SetPathEnv(GetParam());
    base = event_base_new();
    ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
    rank = evmpi_pg_rank(pg);
    size = evmpi_pg_size(pg);
    evmpi_cuda_path_t want = GetParam() == Path::Direct ? EVMPI_CUDA_DIRECT : EVMPI_CUDA_STAGED;
    if (GetParam() == Path::Direct && evmpi_pg_cuda_path(pg) != EVMPI_CUDA_DIRECT)
      GTEST_SKIP() << "this MPI is not CUDA-aware (Open MPI: MPIX_Query_cuda_support; MPICH: MPIX_GPU_query_support): no direct path";
    ASSERT_EQ(evmpi_pg_cuda_path(pg), want);
  }
  void TearDown() override {
    evmpi_pg_destroy(pg);
    if (base)
      event_base_free(base);
#ifdef EVMPI_TEST_FAKE_CUDA
    fake_cuda_host_access(false);
    int pinned = -1;
    fake_cuda_live_allocations(&pinned);
    EXPECT_EQ(pinned, 0) << "pinned staging buffers left after the group was destroyed";
#endif
    MpiTest::TearDown();
  }
  void Finish(evmpi_work_t *w, const char *name) {
    ASSERT_NE(w, nullptr);
    EXPECT_STREQ(evmpi_work_name(w), name);
    ASSERT_TRUE(evmpi_test_finish(base, &w, 1));
  }
  struct event_base *base = nullptr;
  evmpi_pg_t *pg = nullptr;
  int rank = 0, size = 1;
};

std::vector<int32_t> Seq(size_t n, int32_t from) {
  std::vector<int32_t> v(n);
  for (size_t i = 0; i < n; i++)
    v[i] = from + (int32_t)i;
  return v;
}

TEST_P(Cuda, AllreduceSumAndAvg) {
  const size_t n = 1000; // 63 chunks of 64 bytes on the chunked path
  std::vector<int32_t> host = Seq(n, rank * 7);
  DevBuf d(n * 4);
  d.Up(host);
  evmpi_tensor_t th = evmpi_tensor_flat(host.data(), EVMPI_INT32, n), td = OnDevice(d.p, EVMPI_INT32, n);
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_allreduce(pg, &th, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
  Finish(w, "mpi:all_reduce");
  ASSERT_EQ(evmpi_allreduce(pg, &td, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
  Finish(w, "mpi:all_reduce");
  EXPECT_EQ(d.Down<int32_t>(n), host);
  // The result the work reports is the caller's device tensor.
  std::vector<float> f(301, 2.0f * (float)rank);
  DevBuf df(f.size() * 4);
  df.Up(f);
  evmpi_tensor_t tf = OnDevice(df.p, EVMPI_FLOAT32, (int64_t)f.size());
  ASSERT_EQ(evmpi_allreduce(pg, &tf, EVMPI_AVG, &w), EVMPI_OK) << evmpi_last_error();
  ASSERT_TRUE(evmpi_test_run_until_done(base, &w, 1, EVMPI_TEST_TIMEOUT_MS));
  const evmpi_tensor_t *res = nullptr;
  ASSERT_EQ(evmpi_work_result(w, &res), 1u);
  EXPECT_EQ(res[0].data, df.p);
  EXPECT_EQ(res[0].device.type, EVMPI_DEVICE_CUDA);
  evmpi_work_release(w);
  for (float x : df.Down<float>(f.size()))
    ASSERT_EQ(x, (float)(size - 1));
}

TEST_P(Cuda, ReduceAndBroadcastOnEveryRoot) {
  const size_t n = 333;
  for (int root = 0; root < size; root++) {
    std::vector<int32_t> host = Seq(n, rank + root);
    DevBuf d(n * 4);
    d.Up(host);
    evmpi_tensor_t th = evmpi_tensor_flat(host.data(), EVMPI_INT32, n);
    evmpi_tensor_t td = OnDevice(d.p, EVMPI_INT32, n);
    evmpi_work_t *w = nullptr;
    ASSERT_EQ(evmpi_reduce(pg, &th, EVMPI_MAX, root, &w), EVMPI_OK);
    Finish(w, "mpi:reduce");
    ASSERT_EQ(evmpi_reduce(pg, &td, EVMPI_MAX, root, &w), EVMPI_OK) << evmpi_last_error();
    Finish(w, "mpi:reduce");
    ASSERT_EQ(d.Down<int32_t>(n), host) << "reduce, root " << root;

    std::vector<int32_t> b = Seq(n, rank == root ? 1000 : -1);
    d.Up(b);
    ASSERT_EQ(evmpi_broadcast(pg, &td, root, &w), EVMPI_OK) << evmpi_last_error();
    Finish(w, "mpi:broadcast");
    ASSERT_EQ(d.Down<int32_t>(n), Seq(n, 1000)) << "broadcast, root " << root;
  }
}

TEST_P(Cuda, AllreduceCoalesced) {
  std::vector<int32_t> a = Seq(17, rank), c = Seq(40, 3 * rank);
  std::vector<float> b(9, (float)rank);
  DevBuf da(a.size() * 4), db(b.size() * 4), dc(c.size() * 4);
  da.Up(a), db.Up(b), dc.Up(c);
  evmpi_tensor_t th[3] = {evmpi_tensor_flat(a.data(), EVMPI_INT32, 17),
                          evmpi_tensor_flat(b.data(), EVMPI_FLOAT32, 9),
                          evmpi_tensor_flat(c.data(), EVMPI_INT32, 40)};
  evmpi_tensor_t td[3] = {OnDevice(da.p, EVMPI_INT32, 17), OnDevice(db.p, EVMPI_FLOAT32, 9),
                          OnDevice(dc.p, EVMPI_INT32, 40)};
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_allreduce_coalesced(pg, th, 3, EVMPI_SUM, &w), EVMPI_OK);
  Finish(w, "mpi:allreduce_coalesced");
  ASSERT_EQ(evmpi_allreduce_coalesced(pg, td, 3, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
  Finish(w, "mpi:allreduce_coalesced");
  EXPECT_EQ(da.Down<int32_t>(17), a);
  EXPECT_EQ(db.Down<float>(9), b);
  EXPECT_EQ(dc.Down<int32_t>(40), c);
}

TEST_P(Cuda, AllgatherSeparateAdjacentAndBase) {
  const int n = 5;
  std::vector<int32_t> in = Seq(n, rank * 100);
  DevBuf din(n * 4);
  din.Up(in);
  evmpi_tensor_t tin = OnDevice(din.p, EVMPI_INT32, n);
  std::vector<int32_t> expect;
  for (int r = 0; r < size; r++)
    for (int32_t x : Seq(n, r * 100))
      expect.push_back(x);
  // Separate device buffers, then one allocation carved per rank.
  std::vector<std::unique_ptr<DevBuf>> sep;
  DevBuf carved((size_t)n * size * 4);
  for (int pass = 0; pass < 2; pass++) {
    std::vector<evmpi_tensor_t> outs(size);
    for (int r = 0; r < size; r++) {
      if (pass == 0) {
        sep.emplace_back(new DevBuf(n * 4));
        outs[r] = OnDevice(sep.back()->p, EVMPI_INT32, n);
      } else {
        outs[r] = OnDevice((char *)carved.p + (size_t)r * n * 4, EVMPI_INT32, n);
      }
    }
    evmpi_work_t *w = nullptr;
    ASSERT_EQ(evmpi_allgather(pg, outs.data(), &tin, &w), EVMPI_OK) << evmpi_last_error();
    Finish(w, "mpi:all_gather");
    for (int r = 0; r < size; r++) {
      std::vector<int32_t> got =
          pass == 0 ? sep[r]->Down<int32_t>(n) : carved.Down<int32_t>(n, (size_t)r * n);
      EXPECT_EQ(got, Seq(n, r * 100)) << "pass " << pass << ", from rank " << r;
    }
  }
  // Flat, then in place: the input is this rank's slot of the output.
  DevBuf flat((size_t)n * size * 4);
  evmpi_tensor_t tout = OnDevice(flat.p, EVMPI_INT32, (int64_t)n * size);
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_allgather_base(pg, &tout, &tin, &w), EVMPI_OK) << evmpi_last_error();
  Finish(w, "mpi:_allgather_base");
  EXPECT_EQ(flat.Down<int32_t>(expect.size()), expect);
  std::vector<int32_t> junk(expect.size(), -9);
  std::copy(in.begin(), in.end(), junk.begin() + rank * n);
  flat.Up(junk);
  evmpi_tensor_t slot = OnDevice((char *)flat.p + (size_t)rank * n * 4, EVMPI_INT32, n);
  ASSERT_EQ(evmpi_allgather_base(pg, &tout, &slot, &w), EVMPI_OK) << evmpi_last_error();
  Finish(w, "mpi:_allgather_base");
  EXPECT_EQ(flat.Down<int32_t>(expect.size()), expect);
}

TEST_P(Cuda, AllgatherCoalesced) {
  std::vector<int32_t> a = Seq(3, rank * 10), b = Seq(6, rank * 20);
  DevBuf da(12), db(24), outs((size_t)size * 36);
  da.Up(a), db.Up(b);
  evmpi_tensor_t ins[2] = {OnDevice(da.p, EVMPI_INT32, 3), OnDevice(db.p, EVMPI_INT32, 6)};
  std::vector<evmpi_tensor_t> o(2 * size);
  for (int r = 0; r < size; r++) {
    o[r] = OnDevice((char *)outs.p + (size_t)r * 12, EVMPI_INT32, 3);
    o[size + r] = OnDevice((char *)outs.p + (size_t)size * 12 + (size_t)r * 24, EVMPI_INT32, 6);
  }
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_allgather_coalesced(pg, o.data(), ins, 2, &w), EVMPI_OK) << evmpi_last_error();
  Finish(w, "mpi:allgather_coalesced");
  for (int r = 0; r < size; r++) {
    EXPECT_EQ(outs.Down<int32_t>(3, (size_t)r * 3), Seq(3, r * 10));
    EXPECT_EQ(outs.Down<int32_t>(6, (size_t)size * 3 + (size_t)r * 6), Seq(6, r * 20));
  }
}

TEST_P(Cuda, GatherAndScatterOnEveryRoot) {
  const int n = 4;
  for (int root = 0; root < size; root++) {
    std::vector<int32_t> in = Seq(n, rank * 10 + root);
    DevBuf din(n * 4), dout((size_t)n * size * 4);
    din.Up(in);
    evmpi_tensor_t tin = OnDevice(din.p, EVMPI_INT32, n);
    std::vector<evmpi_tensor_t> outs(size);
    for (int r = 0; r < size; r++)
      outs[r] = OnDevice((char *)dout.p + (size_t)r * n * 4, EVMPI_INT32, n);
    evmpi_work_t *w = nullptr;
    ASSERT_EQ(evmpi_gather(pg, rank == root ? outs.data() : nullptr, &tin, root, &w), EVMPI_OK)
        << evmpi_last_error();
    Finish(w, "mpi:gather");
    if (rank == root)
      for (int r = 0; r < size; r++)
        EXPECT_EQ(dout.Down<int32_t>(n, (size_t)r * n), Seq(n, r * 10 + root));

    // Scatter back: rank r receives what root holds in slot r, plus 1000.
    std::vector<int32_t> all;
    for (int r = 0; r < size; r++)
      for (int32_t x : Seq(n, 1000 + r))
        all.push_back(x);
    dout.Up(all);
    DevBuf got(n * 4);
    evmpi_tensor_t tgot = OnDevice(got.p, EVMPI_INT32, n);
    ASSERT_EQ(evmpi_scatter(pg, &tgot, rank == root ? outs.data() : nullptr, root, &w), EVMPI_OK)
        << evmpi_last_error();
    Finish(w, "mpi:scatter");
    EXPECT_EQ(got.Down<int32_t>(n), Seq(n, 1000 + rank)) << "root " << root;
  }
}

TEST_P(Cuda, ReduceScatter) {
  const int n = 6;
  DevBuf din((size_t)n * size * 4), dout(n * 4);
  std::vector<int32_t> all;
  for (int r = 0; r < size; r++)
    for (int32_t x : Seq(n, r * 100 + rank))
      all.push_back(x);
  din.Up(all);
  std::vector<evmpi_tensor_t> ins(size);
  for (int r = 0; r < size; r++)
    ins[r] = OnDevice((char *)din.p + (size_t)r * n * 4, EVMPI_INT32, n);
  evmpi_tensor_t tout = OnDevice(dout.p, EVMPI_INT32, n);
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_reduce_scatter(pg, &tout, ins.data(), EVMPI_SUM, &w), EVMPI_OK)
      << evmpi_last_error();
  Finish(w, "mpi:reduce_scatter");
  std::vector<int32_t> expect(n);
  for (int i = 0; i < n; i++)
    expect[i] = size * (rank * 100 + i) + size * (size - 1) / 2;
  EXPECT_EQ(dout.Down<int32_t>(n), expect);
}

TEST_P(Cuda, AlltoallBaseEqualAndSplitAndList) {
  // Equal: 2 rows per peer, rows of 3.
  const int rows = 2 * size, width = 3;
  std::vector<int32_t> in((size_t)rows * width);
  for (int i = 0; i < rows * width; i++)
    in[i] = rank * 1000 + i;
  DevBuf din(in.size() * 4), dout(in.size() * 4);
  din.Up(in);
  evmpi_tensor_t ti = OnDevice(din.p, EVMPI_INT32, 0), to = ti;
  ti.ndim = to.ndim = 2;
  ti.shape[0] = to.shape[0] = rows;
  ti.shape[1] = to.shape[1] = width;
  to.data = dout.p;
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_alltoall_base(pg, &to, &ti, nullptr, nullptr, &w), EVMPI_OK) << evmpi_last_error();
  Finish(w, "mpi:all_to_all");
  std::vector<int32_t> got = dout.Down<int32_t>(in.size());
  for (int r = 0; r < size; r++)
    for (int i = 0; i < 2 * width; i++)
      ASSERT_EQ(got[(size_t)r * 2 * width + i], r * 1000 + rank * 2 * width + i);

  // Splits: rank r sends r + 1 rows to every peer.
  std::vector<int64_t> isp(size, rank + 1), osp(size);
  int64_t orows = 0;
  for (int r = 0; r < size; r++)
    orows += (osp[r] = r + 1);
  std::vector<int32_t> sin((size_t)(rank + 1) * size);
  for (size_t i = 0; i < sin.size(); i++)
    sin[i] = rank * 100 + (int32_t)i;
  DevBuf dsin(sin.size() * 4), dsout((size_t)orows * 4);
  dsin.Up(sin);
  evmpi_tensor_t si = OnDevice(dsin.p, EVMPI_INT32, (int64_t)sin.size());
  evmpi_tensor_t so = OnDevice(dsout.p, EVMPI_INT32, orows);
  ASSERT_EQ(evmpi_alltoall_base(pg, &so, &si, osp.data(), isp.data(), &w), EVMPI_OK)
      << evmpi_last_error();
  Finish(w, "mpi:all_to_all");
  std::vector<int32_t> sgot = dsout.Down<int32_t>((size_t)orows);
  size_t at = 0;
  for (int r = 0; r < size; r++)
    for (int i = 0; i < r + 1; i++)
      ASSERT_EQ(sgot[at++], r * 100 + rank * (r + 1) + i);

  // List form: to peer r, r + rank + 1 elements.
  std::vector<std::unique_ptr<DevBuf>> bufs;
  std::vector<evmpi_tensor_t> li(size), lo(size);
  for (int r = 0; r < size; r++) {
    bufs.emplace_back(new DevBuf((size_t)(r + rank + 1) * 4));
    bufs.back()->Up(Seq((size_t)(r + rank + 1), rank * 10 + r));
    li[r] = OnDevice(bufs.back()->p, EVMPI_INT32, r + rank + 1);
    bufs.emplace_back(new DevBuf((size_t)(rank + r + 1) * 4));
    lo[r] = OnDevice(bufs.back()->p, EVMPI_INT32, rank + r + 1);
  }
  ASSERT_EQ(evmpi_alltoall(pg, lo.data(), li.data(), &w), EVMPI_OK) << evmpi_last_error();
  Finish(w, "mpi:all_to_all");
  for (int r = 0; r < size; r++)
    EXPECT_EQ(bufs[2 * r + 1]->Down<int32_t>((size_t)(rank + r + 1)), Seq(rank + r + 1, r * 10 + rank));
}

TEST_P(Cuda, SendRecvRingAndAnySource) {
  const int n = 50;
  int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  DevBuf dsend(n * 4), drecv(n * 4);
  dsend.Up(Seq(n, rank * 1000));
  evmpi_tensor_t ts = OnDevice(dsend.p, EVMPI_INT32, n), tr = OnDevice(drecv.p, EVMPI_INT32, n);
  evmpi_work_t *w[2] = {nullptr, nullptr};
  ASSERT_EQ(evmpi_recv(pg, &tr, prev, 7, &w[0]), EVMPI_OK) << evmpi_last_error();
  ASSERT_EQ(evmpi_send(pg, &ts, next, 7, &w[1]), EVMPI_OK) << evmpi_last_error();
  dsend.Up(std::vector<int32_t>(n, -1)); // a staged send has its copy already
  ASSERT_TRUE(evmpi_test_finish(base, w, 2));
  if (GetParam() != Path::Direct)
    EXPECT_EQ(drecv.Down<int32_t>(n), Seq(n, prev * 1000));

  // A short message into a longer device buffer: the tail stays as it was.
  drecv.Up(std::vector<int32_t>(n, 77));
  DevBuf dshort(3 * 4);
  dshort.Up(Seq(3, rank));
  evmpi_tensor_t tshort = OnDevice(dshort.p, EVMPI_INT32, 3);
  ASSERT_EQ(evmpi_recv_anysource(pg, &tr, 8, &w[0]), EVMPI_OK) << evmpi_last_error();
  ASSERT_EQ(evmpi_send(pg, &tshort, next, 8, &w[1]), EVMPI_OK) << evmpi_last_error();
  ASSERT_TRUE(evmpi_test_run_until_done(base, w, 2, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(evmpi_work_status(w[0]), EVMPI_OK) << evmpi_work_error(w[0]);
  EXPECT_EQ(evmpi_work_source_rank(w[0]), prev);
  std::vector<int32_t> got = drecv.Down<int32_t>(n), expect(n, 77);
  for (int i = 0; i < 3; i++)
    expect[i] = prev + i;
  EXPECT_EQ(got, expect);
  evmpi_work_release(w[0]);
  evmpi_work_release(w[1]);
}

// A large allreduce: several default-sized (4 MiB) chunks on the staged path.
TEST_P(Cuda, AllreduceOfTenMegabytes) {
  if (GetParam() == Path::Chunked)
    GTEST_SKIP() << "160,000 chunks of 64 bytes: the other paths cover the size";
  const size_t n = (10u << 20) / 4 + 3;
  std::vector<int32_t> host(n);
  for (size_t i = 0; i < n; i++)
    host[i] = (int32_t)(i % 1000) + rank;
  DevBuf d(n * 4);
  d.Up(host);
  evmpi_tensor_t t = OnDevice(d.p, EVMPI_INT32, (int64_t)n);
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
  Finish(w, "mpi:all_reduce");
  std::vector<int32_t> got = d.Down<int32_t>(n);
  for (size_t i = 0; i < n; i++)
    ASSERT_EQ(got[i], size * (int32_t)(i % 1000) + size * (size - 1) / 2) << "element " << i;
}

INSTANTIATE_TEST_SUITE_P(Paths, Cuda, ::testing::Values(Path::Staged, Path::Chunked, Path::Direct),
                         [](const ::testing::TestParamInfo<Path> &i) { return PathName(i.param); });

// ---- refusals --------------------------------------------------------------------

class CudaRefusals : public MpiTest {
protected:
  void SetUp() override {
    std::string why;
    if ((ndev = DeviceCount(&why)) == 0)
      GTEST_SKIP() << why;
    SetPathEnv(Path::Staged);
    base = event_base_new();
    ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  }
  void TearDown() override {
    evmpi_pg_destroy(pg);
    if (base)
      event_base_free(base);
    unsetenv("EVMPI_CUDA_STAGING");
    unsetenv("EVMPI_CUDA_AWARE");
    unsetenv("EVMPI_CUDA_CHUNK");
    unsetenv("EVMPI_PIECE");
    MpiTest::TearDown();
  }
  // Expects status and a message containing text, and no work.
  void Refused(int rc, evmpi_work_t *w, int status, const char *text) {
    EXPECT_EQ(rc, status) << evmpi_last_error();
    EXPECT_EQ(w, nullptr);
    EXPECT_NE(strstr(evmpi_last_error(), text), nullptr) << evmpi_last_error();
  }
  // The group still works: one device allreduce.
  void StillUsable() {
    DevBuf d(4);
    d.Up(std::vector<int32_t>{1});
    evmpi_tensor_t t = OnDevice(d.p, EVMPI_INT32, 1);
    evmpi_work_t *w = nullptr;
    ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
    ASSERT_TRUE(evmpi_test_finish(base, &w, 1));
    EXPECT_EQ(d.Down<int32_t>(1)[0], evmpi_pg_size(pg));
  }
  void CutAlike(int rank, int size, size_t n);
  struct event_base *base = nullptr;
  evmpi_pg_t *pg = nullptr;
  int ndev = 0;
};

TEST_F(CudaRefusals, MixedHostAndDeviceTensors) {
  int size = evmpi_pg_size(pg);
  DevBuf din(16), dout(16);
  std::vector<int32_t> host(4 * size);
  evmpi_tensor_t in = OnDevice(din.p, EVMPI_INT32, 4);
  std::vector<evmpi_tensor_t> outs(size);
  for (int r = 0; r < size; r++)
    outs[r] = r == size - 1 ? evmpi_tensor_flat(&host[4 * r], EVMPI_INT32, 4)
                            : OnDevice(dout.p, EVMPI_INT32, 4);
  evmpi_work_t *w = nullptr;
  char name[32];
  snprintf(name, sizeof name, "outputs[%d] is on cpu but input is on cuda:0", size - 1);
  Refused(evmpi_allgather(pg, outs.data(), &in, &w), w, EVMPI_ERR_INVALID, name);
  evmpi_tensor_t hflat = evmpi_tensor_flat(host.data(), EVMPI_INT32, 4 * size);
  Refused(evmpi_allgather_base(pg, &hflat, &in, &w), w, EVMPI_ERR_INVALID,
          "output is on cpu but input is on cuda:0");
  evmpi_tensor_t two[2] = {in, evmpi_tensor_flat(host.data(), EVMPI_INT32, 4)};
  Refused(evmpi_allreduce_coalesced(pg, two, 2, EVMPI_SUM, &w), w, EVMPI_ERR_INVALID,
          "tensors[1] is on cpu but tensors[0] is on cuda:0");
  StillUsable();
}

TEST_F(CudaRefusals, TensorsOnDifferentDevices) {
  if (ndev < 2)
    GTEST_SKIP() << "needs two CUDA devices, this process sees " << ndev;
  DevBuf d0(16, 0), d1(16, 1);
  evmpi_tensor_t a = OnDevice(d0.p, EVMPI_INT32, 4), b = OnDevice(d1.p, EVMPI_INT32, 4, 1);
  evmpi_tensor_t two[2] = {a, b};
  evmpi_work_t *w = nullptr;
  Refused(evmpi_allreduce_coalesced(pg, two, 2, EVMPI_SUM, &w), w, EVMPI_ERR_INVALID,
          "tensors[1] is on cuda:1 but tensors[0] is on cuda:0");
  // Memory of cuda:1 labelled cuda:0.
  evmpi_tensor_t lie = OnDevice(d1.p, EVMPI_INT32, 4, 0);
  Refused(evmpi_allreduce(pg, &lie, EVMPI_SUM, &w), w, EVMPI_ERR_INVALID,
          "tensor says cuda:0 but its data is memory of cuda:1");
  StillUsable();
}

TEST_F(CudaRefusals, BadDeviceIndexAndHostMemory) {
  DevBuf d(16);
  evmpi_work_t *w = nullptr;
  evmpi_tensor_t t = OnDevice(d.p, EVMPI_INT32, 4, -1);
  Refused(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), w, EVMPI_ERR_INVALID,
          "tensor: cuda:-1 is not a device of this process");
  t.device.index = 99;
  Refused(evmpi_send(pg, &t, 0, 0, &w), w, EVMPI_ERR_INVALID,
          "tensor: cuda:99 is not a device of this process");
  std::vector<int32_t> host(4);
  evmpi_tensor_t h = OnDevice(host.data(), EVMPI_INT32, 4);
  Refused(evmpi_broadcast(pg, &h, 0, &w), w, EVMPI_ERR_INVALID,
          "tensor says cuda:0 but its data is ordinary host memory");
  StillUsable();
}

TEST_F(CudaRefusals, StagingTurnedOff) {
  evmpi_pg_destroy(pg);
  pg = nullptr;
  setenv("EVMPI_CUDA_STAGING", "0", 1);
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(evmpi_pg_cuda_path(pg), EVMPI_CUDA_REFUSED);
  DevBuf d(16);
  evmpi_tensor_t t = OnDevice(d.p, EVMPI_INT32, 4);
  evmpi_work_t *w = nullptr;
  Refused(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), w, EVMPI_ERR_UNSUPPORTED,
          "this MPI is not CUDA-aware, and EVMPI_CUDA_STAGING=0");
  Refused(evmpi_recv(pg, &t, 0, 0, &w), w, EVMPI_ERR_UNSUPPORTED, "EVMPI_CUDA_STAGING=0");
  // Host tensors are not affected.
  int32_t v = 1;
  evmpi_tensor_t ht = evmpi_tensor_flat(&v, EVMPI_INT32, 1);
  ASSERT_EQ(evmpi_allreduce(pg, &ht, EVMPI_SUM, &w), EVMPI_OK);
  ASSERT_TRUE(evmpi_test_run_until_done(base, &w, 1, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(v, evmpi_pg_size(pg));
  evmpi_work_release(w);
}

TEST_F(CudaRefusals, BadSettings) {
  evmpi_pg_destroy(pg);
  pg = nullptr;
  const char *cases[][3] = {{"EVMPI_CUDA_AWARE", "yes", "EVMPI_CUDA_AWARE=yes is not auto, 0 or 1"},
                            {"EVMPI_CUDA_STAGING", "2", "EVMPI_CUDA_STAGING=2 is not 0 or 1"},
                            {"EVMPI_CUDA_CHUNK", "0", "EVMPI_CUDA_CHUNK=0 is not a power of two"},
                            {"EVMPI_CUDA_CHUNK", "4Q", "EVMPI_CUDA_CHUNK=4Q is not a power of two"},
                            // Not a multiple of every element size, or of
                            // every piece: cut unlike a host rank's tensor.
                            {"EVMPI_CUDA_CHUNK", "8", "EVMPI_CUDA_CHUNK=8 is not a power of two "
                             "from 16 to 1073741824 bytes"},
                            {"EVMPI_CUDA_CHUNK", "96", "EVMPI_CUDA_CHUNK=96 is not a power of two"},
                            {"EVMPI_CUDA_CHUNK", "3M", "EVMPI_CUDA_CHUNK=3M is not a power of two"},
                            {"EVMPI_CUDA_CHUNK", "2G", "EVMPI_CUDA_CHUNK=2G is not a power of two"},
                            {"EVMPI_PIECE", "56", "EVMPI_PIECE=56 is not a power of two"}};
  for (auto &c : cases) {
    setenv(c[0], c[1], 1);
    evmpi_pg_t *bad = nullptr;
    EXPECT_EQ(evmpi_pg_create(base, nullptr, 0, &bad), EVMPI_ERR_INVALID) << c[1];
    EXPECT_EQ(bad, nullptr);
    if (bad)
      evmpi_pg_destroy(bad);
    EXPECT_NE(strstr(evmpi_last_error(), c[2]), nullptr) << evmpi_last_error();
    unsetenv(c[0]);
  }
  setenv("EVMPI_CUDA_AWARE", "0", 1);
  setenv("EVMPI_CUDA_CHUNK", "1M", 1);
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  StillUsable();
}

// Rank 0's tensor is on the device, the others' on the host: the staged
// pipeline's MPI calls must cut the tensor where the host ranks' pieces do.
// The 32-byte chunk (8 int32) becomes 256 bytes, one broadcast piece and
// four 64-byte reduction pieces: a chunk of 8 would be cut 8 against the
// host ranks' 16. With 16-byte pieces and chunks the device rank's chunk
// is the whole message of 64 bytes.
TEST_F(CudaRefusals, DeviceAndHostRanksCutTheTensorAlike) {
  const char *settings[][2] = {{"32", "64"}, {"16", "16"}};
  for (auto &c : settings) {
    SCOPED_TRACE(std::string("EVMPI_CUDA_CHUNK=") + c[0] + " EVMPI_PIECE=" + c[1]);
    evmpi_pg_destroy(pg);
    pg = nullptr;
    setenv("EVMPI_CUDA_AWARE", "0", 1);
    setenv("EVMPI_CUDA_CHUNK", c[0], 1);
    setenv("EVMPI_PIECE", c[1], 1);
    ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
    int rank = evmpi_pg_rank(pg), size = evmpi_pg_size(pg);
    // 1000 int32 go in pieces; 50 (200 bytes) whole with 64-byte pieces.
    for (size_t n : {(size_t)1000, (size_t)50}) {
      SCOPED_TRACE(n);
      CutAlike(rank, size, n);
    }
  }
}

void CudaRefusals::CutAlike(int rank, int size, size_t n) {
  DevBuf d(n * 4);
  std::vector<int32_t> host(n);
  auto run = [&](std::vector<int32_t> in, int which, int root) -> std::vector<int32_t> {
    evmpi_tensor_t t;
    if (rank == 0) {
      d.Up(in);
      t = OnDevice(d.p, EVMPI_INT32, (int64_t)n);
    } else {
      host = in;
      t = evmpi_tensor_flat(host.data(), EVMPI_INT32, (int64_t)n);
    }
    evmpi_work_t *w = nullptr;
    int rc = which == 0   ? evmpi_allreduce(pg, &t, EVMPI_SUM, &w)
             : which == 1 ? evmpi_reduce(pg, &t, EVMPI_SUM, root, &w)
                          : evmpi_broadcast(pg, &t, root, &w);
    EXPECT_EQ(rc, EVMPI_OK) << evmpi_last_error();
    if (rc != EVMPI_OK)
      return {};
    EXPECT_TRUE(evmpi_test_finish(base, &w, 1));
    return rank == 0 ? d.Down<int32_t>(n) : host;
  };
  std::vector<int32_t> out = run(Seq(n, rank), 0, 0);
  ASSERT_EQ(out.size(), n);
  for (size_t i = 0; i < n; i++)
    ASSERT_EQ(out[i], size * (int32_t)i + size * (size - 1) / 2) << "allreduce at " << i;
  for (int root : {0, size - 1}) {
    out = run(Seq(n, rank), 1, root);
    ASSERT_EQ(out.size(), n);
    for (size_t i = 0; i < n; i++)
      ASSERT_EQ(out[i], rank == root ? size * (int32_t)i + size * (size - 1) / 2 : rank + (int32_t)i)
          << "reduce to " << root << " at " << i;
    out = run(rank == root ? Seq(n, 5) : std::vector<int32_t>(n, -1), 2, root);
    ASSERT_EQ(out.size(), n);
    for (size_t i = 0; i < n; i++)
      ASSERT_EQ(out[i], 5 + (int32_t)i) << "broadcast from " << root << " at " << i;
  }
}

#ifdef EVMPI_TEST_FAKE_CUDA
// Only the simulated runtime can make a copy fail on purpose.
TEST_F(CudaRefusals, FailingCopiesFailTheWorkAndNotTheGroup) {
  DevBuf d(400);
  d.Up(std::vector<int32_t>(100, 1));
  evmpi_tensor_t t = OnDevice(d.p, EVMPI_INT32, 100);
  evmpi_work_t *w = nullptr;
  fake_cuda_fail_copies(1); // every rank: none reaches MPI, none waits for the others
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
  ASSERT_TRUE(evmpi_test_run_until_done(base, &w, 1, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(evmpi_work_status(w), EVMPI_ERR_CUDA);
  EXPECT_NE(strstr(evmpi_work_error(w), "allreduce: cudaMemcpyAsync (device to host) failed: "
                   "cudaErrorLaunchFailure"), nullptr) << evmpi_work_error(w);
  evmpi_work_release(w);

  // A send's copy fails at once, before anything is issued.
  fake_cuda_fail_copies(1);
  int me = evmpi_pg_rank(pg);
  EXPECT_EQ(evmpi_send(pg, &t, me, 3, &w), EVMPI_ERR_CUDA);
  EXPECT_EQ(w, nullptr);
  EXPECT_NE(strstr(evmpi_last_error(), "send: cudaMemcpy (device to host) failed"), nullptr)
      << evmpi_last_error();

  // A receive's copy to the device fails after the message arrived.
  evmpi_work_t *ws[2] = {nullptr, nullptr};
  DevBuf dr(400);
  evmpi_tensor_t tr = OnDevice(dr.p, EVMPI_INT32, 100);
  ASSERT_EQ(evmpi_send(pg, &t, me, 4, &ws[0]), EVMPI_OK) << evmpi_last_error();
  fake_cuda_fail_copies(1);
  ASSERT_EQ(evmpi_recv(pg, &tr, me, 4, &ws[1]), EVMPI_OK) << evmpi_last_error();
  ASSERT_TRUE(evmpi_test_run_until_done(base, ws, 2, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(evmpi_work_status(ws[0]), EVMPI_OK);
  EXPECT_EQ(evmpi_work_status(ws[1]), EVMPI_ERR_CUDA);
  EXPECT_NE(strstr(evmpi_work_error(ws[1]), "recv: cudaMemcpy (host to device) of the 400 bytes "
                   "received failed"), nullptr) << evmpi_work_error(ws[1]);
  evmpi_work_release(ws[0]);
  evmpi_work_release(ws[1]);
  fake_cuda_fail_copies(0);
  StillUsable();
}

// A burst of allreduces submitted from a callback: a barrier first, which
// the loop thread claims, so that every rank's gate counts the whole burst
// and the eight allreduces behind it run as one fused set on every rank
// (lib/fuse.c). Rank 1's tensors are on the device, packed with
// cudaMemcpy; the others' on the host.
struct FusedBurst {
  static constexpr int kWorks = 8, kElems = 1000;
  evmpi_pg_t *pg;
  int rank;
  std::vector<DevBuf *> dev;
  std::vector<std::vector<int32_t>> host;
  std::vector<evmpi_tensor_t> ts;
  evmpi_work_t *barrier = nullptr;
  std::vector<evmpi_work_t *> ws;
  int timeout_ms = 0; // rank 0's group timeout, set before the burst
  int failed = 0;
  bool submitted = false;

  explicit FusedBurst(evmpi_pg_t *g)
      : pg(g), rank(evmpi_pg_rank(g)), host(kWorks), ts(kWorks), ws(kWorks, nullptr) {
    for (int i = 0; i < kWorks; i++) {
      host[i] = Seq(kElems, 1000 * i + rank);
      if (rank == 1) {
        dev.push_back(new DevBuf((size_t)kElems * 4));
        dev.back()->Up(host[i]);
        ts[i] = OnDevice(dev.back()->p, EVMPI_INT32, kElems);
      } else {
        ts[i] = evmpi_tensor_flat(host[i].data(), EVMPI_INT32, kElems);
      }
    }
  }
  ~FusedBurst() {
    evmpi_work_release(barrier);
    for (auto *w : ws)
      evmpi_work_release(w);
    for (auto *d : dev)
      delete d;
  }
  std::vector<int32_t> Values(int i) const {
    return rank == 1 ? dev[i]->Down<int32_t>(kElems) : host[i];
  }
  static void Go(evmpi_work_t *w, void *arg) {
    (void)w;
    auto *b = static_cast<FusedBurst *>(arg);
    if (b->rank == 0 && b->timeout_ms && evmpi_pg_set_timeout(b->pg, b->timeout_ms) != EVMPI_OK)
      b->failed++;
    if (evmpi_barrier(b->pg, &b->barrier) != EVMPI_OK)
      b->failed++;
    for (int i = 0; i < kWorks; i++)
      if (evmpi_allreduce(b->pg, &b->ts[i], EVMPI_SUM, &b->ws[i]) != EVMPI_OK)
        b->failed++;
    b->submitted = true;
  }
  // Submits the burst from a barrier's callback and waits for it all.
  void Run(struct event_base *base) {
    evmpi_work_t *start = nullptr;
    ASSERT_EQ(evmpi_barrier(pg, &start), EVMPI_OK) << evmpi_last_error();
    ASSERT_EQ(evmpi_work_on_complete(start, Go, this), EVMPI_OK);
    ASSERT_TRUE(evmpi_test_run_until(
        base, [](void *a) { return static_cast<FusedBurst *>(a)->submitted; }, this,
        EVMPI_TEST_TIMEOUT_MS));
    evmpi_work_release(start);
    ASSERT_EQ(failed, 0) << evmpi_last_error();
    ASSERT_TRUE(evmpi_test_run_until_done(base, ws.data(), kWorks, EVMPI_TEST_TIMEOUT_MS));
  }
  // Every work succeeded with the sums of all ranks' Seq.
  void ExpectSums(int size) {
    for (int i = 0; i < kWorks; i++) {
      ASSERT_EQ(evmpi_work_status(ws[i]), EVMPI_OK) << evmpi_work_error(ws[i]);
      std::vector<int32_t> v = Values(i);
      for (int j = 0; j < kElems; j++)
        ASSERT_EQ(v[j], size * (1000 * i + j) + size * (size - 1) / 2) << i << "[" << j << "]";
    }
  }
  // The fused set's records share one finish.
  void ExpectOneSet() {
    evmpi_work_record_t first, r;
    ASSERT_EQ(evmpi_work_get_record(ws[0], &first), EVMPI_OK);
    for (int i = 1; i < kWorks; i++) {
      ASSERT_EQ(evmpi_work_get_record(ws[i], &r), EVMPI_OK);
      EXPECT_EQ(r.finished_ns, first.finished_ns) << "allreduce " << i << " was not fused";
    }
  }
};

TEST_F(CudaRefusals, AFusedSetPacksDeviceTensorsAsTheHostRanksDo) {
  int size = evmpi_pg_size(pg);
  if (size < 2)
    GTEST_SKIP() << "needs a second rank for the device tensors (and a gate to fuse on)";
  FusedBurst b(pg);
  b.Run(base);
  b.ExpectSums(size);
  b.ExpectOneSet();
}

// Rank 1's first copy into the pack takes 3 s (a slow device), so rank 0,
// with a 500 ms timeout, gives up inside the fused call: its eight works
// fail with EVMPI_ERR_TIMEOUT and its group breaks. Its call still ends
// once rank 1 joins, with the sums in the worker's pack; they must not be
// copied into rank 0's tensors, which were handed back to it when the
// works failed. The other ranks' sums are right.
TEST_F(CudaRefusals, AFusedSetThatTimesOutLeavesItsTensorsAlone) {
  int rank = evmpi_pg_rank(pg), size = evmpi_pg_size(pg);
  if (size < 2)
    GTEST_SKIP() << "needs a slow peer";
  const int kDoneTag = 4712;
  FusedBurst b(pg);
  b.timeout_ms = 500;
  if (rank == 1)
    fake_cuda_slow_next_copy(3000);
  b.Run(base);
  if (rank == 0) {
    for (int i = 0; i < FusedBurst::kWorks; i++) {
      EXPECT_EQ(evmpi_work_status(b.ws[i]), EVMPI_ERR_TIMEOUT) << i;
      const char *e = evmpi_work_error(b.ws[i]);
      ASSERT_NE(e, nullptr);
      EXPECT_NE(strstr(e, "timed out after 500 ms; the group is broken"), nullptr) << e;
    }
    // Every peer is out of the call: ours has ended too, or is about to.
    // Bounded: a peer whose own checks failed early may never say it.
    double deadline = evmpi_test_now_ms() + EVMPI_TEST_TIMEOUT_MS;
    for (int r = 1; r < size; r++) {
      int done = 0, got = 0;
      MPI_Request req;
      MPI_Irecv(&done, 1, MPI_INT, r, kDoneTag, MPI_COMM_WORLD, &req);
      while (!got && evmpi_test_now_ms() < deadline) {
        MPI_Test(&req, &got, MPI_STATUS_IGNORE);
        if (!got)
          usleep(1000);
      }
      if (!got) {
        MPI_Cancel(&req);
        MPI_Wait(&req, MPI_STATUS_IGNORE);
      }
      ASSERT_TRUE(got) << "rank " << r << " did not finish its fused set";
    }
    evmpi_test_run_for(base, 300);
    for (int i = 0; i < FusedBurst::kWorks; i++)
      EXPECT_EQ(b.Values(i), Seq(FusedBurst::kElems, 1000 * i)) << "allreduce " << i
          << " was written after it timed out";
  } else {
    b.ExpectSums(size);
    b.ExpectOneSet();
    int done = 1;
    MPI_Send(&done, 1, MPI_INT, 0, kDoneTag, MPI_COMM_WORLD);
  }
}

// Every thread keeps its own current device: the worker after a staged
// collective on cuda:1, the thread that finishes a staged receive (the
// poller, or this one, which runs the loop and may test requests itself)
// after its copy to the device, and the thread that destroys the group
// after the stager's streams are freed device by device. Before, each was
// left on cuda:1.
TEST_F(CudaRefusals, EveryThreadKeepsItsCurrentDevice) {
  if (ndev < 2)
    GTEST_SKIP() << "needs two CUDA devices, this process sees " << ndev;
  int me = evmpi_pg_rank(pg);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  DevBuf d(400, 1), dr(400, 1);
  d.Up(std::vector<int32_t>(100, 3));
  evmpi_tensor_t t = OnDevice(d.p, EVMPI_INT32, 100, 1), tr = OnDevice(dr.p, EVMPI_INT32, 100, 1);
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
  ASSERT_TRUE(evmpi_test_finish(base, &w, 1));
  EXPECT_EQ(fake_cuda_threads_on_device(1), 0) << "after a staged allreduce on cuda:1";
#ifdef EVMPI_TEST_FAKE_CUDA
  long h2d_before = fake_cuda_sync_h2d_here();
#endif
  for (int round = 0; round < 20; round++) { // receives finished off this loop thread
    evmpi_work_t *ws[2] = {nullptr, nullptr};
    ASSERT_EQ(evmpi_recv(pg, &tr, me, 5, &ws[0]), EVMPI_OK) << evmpi_last_error();
    ASSERT_EQ(evmpi_send(pg, &t, me, 5, &ws[1]), EVMPI_OK) << evmpi_last_error();
    ASSERT_TRUE(evmpi_test_finish(base, ws, 2));
    ASSERT_EQ(fake_cuda_threads_on_device(1), 0) << "after staged receive " << round;
  }
#ifdef EVMPI_TEST_FAKE_CUDA
  // The loop thread polls and finishes receives itself after it delivered
  // one (the host receive below), but not staged ones: their copy to the
  // device runs on the poller. The staged send goes out from the host
  // receive's callback, so the staged receive completes while this loop
  // thread polls.
  for (int round = 0; round < 20; round++) {
    struct Chain {
      evmpi_pg_t *pg;
      const evmpi_tensor_t *t;
      int me;
      evmpi_work_t *send = nullptr;
    } c{pg, &t, me};
    int32_t hin = 0, hout = 1;
    evmpi_tensor_t thi = evmpi_tensor_flat(&hin, EVMPI_INT32, 1);
    evmpi_tensor_t tho = evmpi_tensor_flat(&hout, EVMPI_INT32, 1);
    evmpi_work_t *ws[4] = {nullptr, nullptr, nullptr, nullptr};
    ASSERT_EQ(evmpi_recv(pg, &tr, me, 8, &ws[0]), EVMPI_OK) << evmpi_last_error();
    ASSERT_EQ(evmpi_recv(pg, &thi, me, 9, &ws[1]), EVMPI_OK) << evmpi_last_error();
    ASSERT_EQ(evmpi_work_on_complete(
                  ws[1],
                  [](evmpi_work_t *, void *arg) {
                    auto *ch = static_cast<Chain *>(arg);
                    evmpi_send(ch->pg, ch->t, ch->me, 8, &ch->send);
                  },
                  &c),
              EVMPI_OK);
    ASSERT_EQ(evmpi_send(pg, &tho, me, 9, &ws[2]), EVMPI_OK) << evmpi_last_error();
    ASSERT_TRUE(evmpi_test_run_until_done(base, ws, 3, EVMPI_TEST_TIMEOUT_MS));
    ASSERT_NE(c.send, nullptr);
    ws[3] = c.send;
    ASSERT_TRUE(evmpi_test_run_until_done(base, &ws[3], 1, EVMPI_TEST_TIMEOUT_MS));
    EXPECT_EQ(evmpi_work_status(ws[0]), EVMPI_OK) << evmpi_work_error(ws[0]);
    for (evmpi_work_t *x : ws)
      evmpi_work_release(x);
  }
  EXPECT_EQ(fake_cuda_sync_h2d_here() - h2d_before, 0)
      << "staged receives copied to the device on the loop thread";
#endif
  EXPECT_EQ(dr.Down<int32_t>(100), std::vector<int32_t>(100, 3 * evmpi_pg_size(pg)));
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  evmpi_pg_destroy(pg);
  pg = nullptr;
  int cur = -1;
  EXPECT_EQ(cudaGetDevice(&cur), cudaSuccess);
  EXPECT_EQ(cur, 0) << "after the group (with streams on cuda:1) was destroyed";
  EXPECT_EQ(fake_cuda_threads_on_device(1), 0) << "after the group was destroyed";
}

// The chunked path really goes in chunks: one copy each way per chunk.
TEST_F(CudaRefusals, ChunkedAllreduceCopiesChunkByChunk) {
  evmpi_pg_destroy(pg);
  pg = nullptr;
  SetPathEnv(Path::Chunked); // 64-byte chunks
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  DevBuf d(1000 * 4);
  d.Up(std::vector<int32_t>(1000, 2));
  evmpi_tensor_t t = OnDevice(d.p, EVMPI_INT32, 1000);
  long d2h0, h2d0, d2h1, h2d1;
  fake_cuda_copy_counts(&d2h0, &h2d0);
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
  ASSERT_TRUE(evmpi_test_finish(base, &w, 1));
  fake_cuda_copy_counts(&d2h1, &h2d1);
  EXPECT_EQ(d2h1 - d2h0, 63); // 1000 int32 in chunks of 16
  EXPECT_EQ(h2d1 - h2d0, 63);
  for (int32_t x : d.Down<int32_t>(1000))
    ASSERT_EQ(x, 2 * evmpi_pg_size(pg));
}
// With a CUDA-aware MPI, device pointers go to MPI unless evmpi itself would
// touch the data on the host (an average's division, packing separate
// buffers): those operations are staged. Counted by the copies they make.
TEST_F(CudaRefusals, DirectPathStagesWhatTouchesTheHost) {
  evmpi_pg_destroy(pg);
  pg = nullptr;
  SetPathEnv(Path::Direct);
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  ASSERT_EQ(evmpi_pg_cuda_path(pg), EVMPI_CUDA_DIRECT);
  int size = evmpi_pg_size(pg);
  DevBuf d(64 * 4), outs((size_t)size * 64 * 4);
  std::vector<DevBuf *> sep;
  for (int r = 0; r < size; r++)
    sep.push_back(new DevBuf(65 * 4)); // not back to back
  d.Up(std::vector<float>(64, 1.0f));
  auto copies = [&](std::function<int(evmpi_work_t **)> submit) {
    long d2h0, h2d0, d2h1, h2d1;
    fake_cuda_copy_counts(&d2h0, &h2d0);
    evmpi_work_t *w = nullptr;
    EXPECT_EQ(submit(&w), EVMPI_OK) << evmpi_last_error();
    EXPECT_TRUE(evmpi_test_finish(base, &w, 1));
    fake_cuda_copy_counts(&d2h1, &h2d1);
    return (d2h1 - d2h0) + (h2d1 - h2d0);
  };
  evmpi_tensor_t t = OnDevice(d.p, EVMPI_FLOAT32, 64);
  EXPECT_EQ(copies([&](evmpi_work_t **w) { return evmpi_allreduce(pg, &t, EVMPI_SUM, w); }), 0);
  EXPECT_GT(copies([&](evmpi_work_t **w) { return evmpi_allreduce(pg, &t, EVMPI_AVG, w); }), 0);
  std::vector<evmpi_tensor_t> carved(size), separate(size);
  for (int r = 0; r < size; r++) {
    carved[r] = OnDevice((char *)outs.p + (size_t)r * 256, EVMPI_FLOAT32, 64);
    separate[r] = OnDevice(sep[r]->p, EVMPI_FLOAT32, 64);
  }
  EXPECT_EQ(copies([&](evmpi_work_t **w) { return evmpi_allgather(pg, carved.data(), &t, w); }), 0);
  if (size > 1) {
    EXPECT_GT(copies([&](evmpi_work_t **w) { return evmpi_allgather(pg, separate.data(), &t, w); }),
              0);
    for (int r = 0; r < size; r++)
      EXPECT_EQ(sep[r]->Down<float>(64), outs.Down<float>(64, (size_t)r * 64));
  }
  for (DevBuf *b : sep)
    delete b;
}
#else
// Without a device the CUDA runtime's own refusal reaches the caller.
TEST_F(MpiTest, NoDevice) {
  std::string why;
  if (DeviceCount(&why) > 0)
    GTEST_SKIP() << "a CUDA device is present";
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  int32_t fake_device_memory[4] = {0, 0, 0, 0};
  evmpi_tensor_t t = OnDevice(fake_device_memory, EVMPI_INT32, 4);
  evmpi_work_t *w = nullptr;
  EXPECT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_ERR_CUDA);
  EXPECT_EQ(w, nullptr);
  EXPECT_NE(strstr(evmpi_last_error(), "allreduce: tensor is on cuda:0 but the CUDA runtime finds "
                   "no device (cudaGetDeviceCount: "), nullptr) << evmpi_last_error();
  evmpi_pg_destroy(pg);
  event_base_free(base);
}
#endif

} // namespace

int main(int argc, char **argv) { return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE); }
