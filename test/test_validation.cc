// test_validation.cc: every rejected argument. Each returns its status and a
// message naming the operation and the value, creates no work, queues
// nothing, and leaves the group working.
#include "config.h" // EVMPI_HAVE_CUDA
#include "harness.h"

#include <event2/event.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace {

class Validation : public MpiTest {
protected:
  void SetUp() override {
    base = event_base_new();
    ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
    size = evmpi_pg_size(pg);
  }
  void TearDown() override {
    // The group still works after every rejection.
    if (pg) {
      int32_t v = 1;
      evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_INT32, 1);
      evmpi_work_t *w = nullptr;
      EXPECT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
      if (w) {
        EXPECT_EQ(evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
        EXPECT_EQ(v, size);
        evmpi_work_release(w);
      }
      evmpi_pg_destroy(pg);
    }
    event_base_free(base);
    MpiTest::TearDown();
  }

  // Calls submit, which must fail with want, leave the work NULL and set a
  // message that contains every one of needles.
  void Rejects(int want, std::function<int(evmpi_work_t **)> submit,
               std::initializer_list<const char *> needles) {
    evmpi_work_t *w = reinterpret_cast<evmpi_work_t *>(0x1);
    int rc = submit(&w);
    EXPECT_EQ(rc, want) << evmpi_strerror(rc) << ": " << evmpi_last_error();
    EXPECT_EQ(w, nullptr);
    std::string msg = evmpi_last_error();
    for (const char *n : needles)
      EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }

  struct event_base *base = nullptr;
  evmpi_pg_t *pg = nullptr;
  int size = 0;
  int32_t data[4] = {0, 0, 0, 0};
  evmpi_tensor_t good() { return evmpi_tensor_flat(data, EVMPI_INT32, 4); }
};

TEST_F(Validation, NullPointers) {
  evmpi_tensor_t t = good();
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allreduce(nullptr, &t, EVMPI_SUM, w); },
          {"allreduce", "pg is NULL"});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allreduce(pg, nullptr, EVMPI_SUM, w); },
          {"allreduce", "tensor is NULL"});
  EXPECT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, nullptr), EVMPI_ERR_INVALID);
  EXPECT_NE(std::strstr(evmpi_last_error(), "work is NULL"), nullptr);
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_broadcast(pg, nullptr, 0, w); },
          {"broadcast", "tensor is NULL"});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_barrier(nullptr, w); },
          {"barrier", "pg is NULL"});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_send(pg, nullptr, 0, 0, w); },
          {"send", "tensor is NULL"});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_recv(pg, nullptr, 0, 0, w); },
          {"recv", "tensor is NULL"});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_recv_anysource(nullptr, &t, 0, w); },
          {"recv_anysource", "pg is NULL"});
  // Accessors take NULL without crashing.
  EXPECT_EQ(evmpi_pg_rank(nullptr), -1);
  EXPECT_EQ(evmpi_pg_size(nullptr), -1);
  EXPECT_FALSE(evmpi_work_is_completed(nullptr));
  EXPECT_FALSE(evmpi_work_is_success(nullptr));
  EXPECT_EQ(evmpi_work_status(nullptr), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_work_wait(nullptr, 0), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_work_abort(nullptr), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_work_on_complete(nullptr, [](evmpi_work_t *, void *) {}, nullptr), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_work_error(nullptr), nullptr);
  EXPECT_EQ(evmpi_work_name(nullptr), nullptr);
  EXPECT_EQ(evmpi_work_get_future(nullptr), nullptr);
  EXPECT_EQ(evmpi_work_source_rank(nullptr), -1);
  EXPECT_EQ(evmpi_work_result(nullptr, nullptr), 0u);
  EXPECT_EQ(evmpi_future_then(nullptr, [](evmpi_future_t *, void *) {}, nullptr), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_future_wait(nullptr, 0), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_future_all(nullptr, 2, nullptr), EVMPI_ERR_INVALID);
  evmpi_future_t *all = reinterpret_cast<evmpi_future_t *>(1);
  EXPECT_EQ(evmpi_future_all(nullptr, 2, &all), EVMPI_ERR_INVALID);
  EXPECT_EQ(all, nullptr);
  evmpi_future_t *one[2] = {nullptr, nullptr};
  EXPECT_EQ(evmpi_future_all(one, 2, &all), EVMPI_ERR_INVALID);
  EXPECT_NE(std::strstr(evmpi_last_error(), "futures[0] is NULL"), nullptr) << evmpi_last_error();
  evmpi_work_release(nullptr);
  evmpi_future_release(nullptr);
  evmpi_pg_destroy(nullptr);
}

TEST_F(Validation, MalformedTensors) {
  evmpi_tensor_t t = good();
  t.dtype = static_cast<evmpi_dtype_t>(99);
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allreduce(pg, &t, EVMPI_SUM, w); },
          {"allreduce", "dtype 99"});
  t = good();
  t.ndim = -1;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_broadcast(pg, &t, 0, w); },
          {"broadcast", "ndim -1"});
  t.ndim = EVMPI_MAX_DIMS + 1;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_send(pg, &t, 0, 0, w); },
          {"send", "ndim 9"});
  t = good();
  t.shape[0] = -4;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_recv(pg, &t, 0, 0, w); },
          {"recv", "shape[0] is -4"});
  t = good();
  t.data = nullptr;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allreduce(pg, &t, EVMPI_SUM, w); },
          {"allreduce", "data is NULL", "4 elements"});
  // 2x2 with column-major strides is not contiguous.
  t = good();
  t.ndim = 2;
  t.shape[0] = 2;
  t.shape[1] = 2;
  t.strides[0] = 1;
  t.strides[1] = 2;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allreduce(pg, &t, EVMPI_SUM, w); },
          {"allreduce", "contiguous"});
  t = good();
  t.shape[0] = INT64_MAX / 2;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allreduce(pg, &t, EVMPI_SUM, w); },
          {"allreduce", "overflows"});
  t = good();
  t.device.type = static_cast<evmpi_device_type_t>(7);
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allreduce(pg, &t, EVMPI_SUM, w); },
          {"allreduce", "device type 7"});
#ifndef EVMPI_HAVE_CUDA
  // With CUDA, test_cuda checks device tensors (host memory labelled as
  // device memory, no device at all).
  t = good();
  t.device.type = EVMPI_DEVICE_CUDA;
  Rejects(EVMPI_ERR_UNSUPPORTED, [&](evmpi_work_t **w) { return evmpi_allreduce(pg, &t, EVMPI_SUM, w); },
          {"allreduce", "cuda:0", "built without CUDA"});
#endif
}

TEST_F(Validation, ContiguousShapesAreAccepted) {
  // Explicit row-major strides, a scalar, an empty tensor, and a size-1
  // dimension with an arbitrary stride are all contiguous.
  evmpi_tensor_t shapes[4];
  shapes[0] = good();
  shapes[0].ndim = 2;
  shapes[0].shape[0] = 2;
  shapes[0].shape[1] = 2;
  shapes[0].strides[0] = 2;
  shapes[0].strides[1] = 1;
  shapes[1] = good();
  shapes[1].ndim = 0;
  shapes[2] = good();
  shapes[2].shape[0] = 0;
  shapes[2].data = nullptr;
  shapes[3] = good();
  shapes[3].ndim = 2;
  shapes[3].shape[0] = 1;
  shapes[3].shape[1] = 4;
  shapes[3].strides[0] = 12345;
  shapes[3].strides[1] = 1;
  for (auto &t : shapes) {
    evmpi_work_t *w = nullptr;
    ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_MAX, &w), EVMPI_OK) << evmpi_last_error();
    EXPECT_EQ(evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
    evmpi_work_release(w);
  }
  EXPECT_EQ(evmpi_tensor_numel(&shapes[1]), 1);
  EXPECT_EQ(evmpi_tensor_numel(&shapes[2]), 0);
  EXPECT_EQ(evmpi_tensor_numel(nullptr), -1);
}

TEST_F(Validation, ReduceOpsAndDtypes) {
  evmpi_tensor_t t = good();
  Rejects(EVMPI_ERR_INVALID,
          [&](evmpi_work_t **w) { return evmpi_allreduce(pg, &t, static_cast<evmpi_reduce_op_t>(42), w); },
          {"allreduce", "op 42"});
  float f[2] = {0, 0};
  evmpi_tensor_t tf = evmpi_tensor_flat(f, EVMPI_FLOAT32, 2);
  Rejects(EVMPI_ERR_UNSUPPORTED, [&](evmpi_work_t **w) { return evmpi_allreduce(pg, &tf, EVMPI_BAND, w); },
          {"allreduce", "band", "float32"});
  double _Complex c[1] = {0};
  evmpi_tensor_t tc = evmpi_tensor_flat(c, EVMPI_COMPLEX128, 1);
  Rejects(EVMPI_ERR_UNSUPPORTED, [&](evmpi_work_t **w) { return evmpi_allreduce(pg, &tc, EVMPI_MIN, w); },
          {"min", "complex128"});
  Rejects(EVMPI_ERR_UNSUPPORTED, [&](evmpi_work_t **w) { return evmpi_allreduce(pg, &t, EVMPI_AVG, w); },
          {"avg", "int32"});
  uint16_t h[1] = {0};
  evmpi_tensor_t th = evmpi_tensor_flat(h, EVMPI_FLOAT16, 1);
  Rejects(EVMPI_ERR_UNSUPPORTED, [&](evmpi_work_t **w) { return evmpi_allreduce(pg, &th, EVMPI_BAND, w); },
          {"band", "float16"});
  // Bitwise ops on integers and bool are fine.
  int32_t bits = 1 << evmpi_pg_rank(pg);
  evmpi_tensor_t tb = evmpi_tensor_flat(&bits, EVMPI_INT32, 1);
  evmpi_work_t *w;
  ASSERT_EQ(evmpi_allreduce(pg, &tb, EVMPI_BOR, &w), EVMPI_OK) << evmpi_last_error();
  ASSERT_EQ(evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
  EXPECT_EQ(bits, (1 << size) - 1);
  evmpi_work_release(w);
  bool flag = evmpi_pg_rank(pg) == 0;
  evmpi_tensor_t tbool = evmpi_tensor_flat(&flag, EVMPI_BOOL, 1);
  ASSERT_EQ(evmpi_allreduce(pg, &tbool, EVMPI_MAX, &w), EVMPI_OK) << evmpi_last_error();
  ASSERT_EQ(evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
  EXPECT_TRUE(flag);
  evmpi_work_release(w);
}

TEST_F(Validation, RanksAndTags) {
  evmpi_tensor_t t = good();
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_broadcast(pg, &t, -1, w); },
          {"broadcast", "root -1"});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_broadcast(pg, &t, size, w); },
          {"broadcast", ("root " + std::to_string(size)).c_str()});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_send(pg, &t, size, 0, w); },
          {"send", ("dst " + std::to_string(size)).c_str()});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_recv(pg, &t, -2, 0, w); },
          {"recv", "src -2"});
  // MPI's wildcard is not a rank: evmpi_recv_anysource is the way to it
  // (its value is -1 in Open MPI, -2 in MPICH).
  Rejects(EVMPI_ERR_INVALID,
          [&](evmpi_work_t **w) { return evmpi_recv(pg, &t, MPI_ANY_SOURCE, 0, w); },
          {"recv", ("src " + std::to_string(MPI_ANY_SOURCE)).c_str()});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_send(pg, &t, 0, -1, w); },
          {"send", "tag -1"});
  int *ub = nullptr, flag = 0;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag);
  ASSERT_TRUE(flag);
  if (*ub < INT_MAX) // Open MPI's bound is INT_MAX: no tag lies above it
    Rejects(EVMPI_ERR_INVALID,
            [&](evmpi_work_t **w) { return evmpi_recv_anysource(pg, &t, *ub + 1, w); },
            {"recv_anysource", "MPI_TAG_UB"});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_recv_anysource(pg, &t, -5, w); },
          {"recv_anysource", "tag -5"});
}

TEST_F(Validation, GroupCreation) {
  evmpi_pg_t *g = reinterpret_cast<evmpi_pg_t *>(1);
  int wsize = evmpi_test_world_size();
  EXPECT_EQ(evmpi_pg_create(base, nullptr, 0, nullptr), EVMPI_ERR_INVALID);
  int ranks[2] = {0, 0};
  EXPECT_EQ(evmpi_pg_create(base, ranks, 0, &g), EVMPI_ERR_INVALID);
  EXPECT_EQ(g, nullptr);
  EXPECT_NE(std::strstr(evmpi_last_error(), "nranks 0"), nullptr) << evmpi_last_error();
  int bad[1] = {wsize};
  EXPECT_EQ(evmpi_pg_create(base, bad, 1, &g), EVMPI_ERR_INVALID);
  EXPECT_NE(std::strstr(evmpi_last_error(), ("ranks[0] = " + std::to_string(wsize)).c_str()), nullptr)
      << evmpi_last_error();
  if (wsize >= 2) {
    EXPECT_EQ(evmpi_pg_create(base, ranks, 2, &g), EVMPI_ERR_INVALID);
    EXPECT_NE(std::strstr(evmpi_last_error(), "appears twice"), nullptr) << evmpi_last_error();
  }
  EXPECT_EQ(evmpi_pg_create_from_comm(base, MPI_COMM_NULL, &g), EVMPI_ERR_INVALID);
  EXPECT_NE(std::strstr(evmpi_last_error(), "MPI_COMM_NULL"), nullptr);
}

TEST_F(Validation, StatusStrings) {
  const int codes[] = {EVMPI_OK, EVMPI_ERR_INVALID, EVMPI_ERR_UNSUPPORTED, EVMPI_ERR_MPI,
                       EVMPI_ERR_TIMEOUT, EVMPI_ERR_ABORTED, EVMPI_ERR_NOMEM, EVMPI_ERR_CUDA,
                       EVMPI_ERR_STATE};
  std::set<std::string> seen;
  for (int c : codes) {
    ASSERT_NE(evmpi_strerror(c), nullptr);
    seen.insert(evmpi_strerror(c));
  }
  EXPECT_EQ(seen.size(), sizeof codes / sizeof codes[0]); // all distinct
  EXPECT_STREQ(evmpi_strerror(12345), "unknown evmpi status");
  EXPECT_EQ(evmpi_dtype_size(EVMPI_COMPLEX128), 16u);
  EXPECT_EQ(evmpi_dtype_size(EVMPI_BFLOAT16), 2u);
  EXPECT_EQ(evmpi_dtype_size(static_cast<evmpi_dtype_t>(-3)), 0u);
}


// PyTorch's ProcessGroupMPI's checks on lists, roots and splits, one by one.
TEST_F(Validation, ListOperations) {
  int rank = evmpi_pg_rank(pg);
  std::vector<int32_t> store(8 * size, 0);
  std::vector<evmpi_tensor_t> list(size);
  for (int r = 0; r < size; r++)
    list[r] = evmpi_tensor_flat(&store[8 * r], EVMPI_INT32, 4);
  evmpi_tensor_t in = good();
  // allgather: outputs of another size or dtype, NULL outputs.
  std::vector<evmpi_tensor_t> bad = list;
  bad[size - 1].shape[0] = 3;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allgather(pg, bad.data(), &in, w); },
          {"allgather", ("outputs[" + std::to_string(size - 1) + "] has 3 elements").c_str(), "input has 4"});
  bad = list;
  bad[0].dtype = EVMPI_FLOAT32;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allgather(pg, bad.data(), &in, w); },
          {"allgather", "outputs[0] is float32", "input is int32"});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allgather(pg, nullptr, &in, w); },
          {"allgather", "outputs is NULL"});
  // allgather_base: output must be size * input.
  evmpi_tensor_t flat_out = evmpi_tensor_flat(store.data(), EVMPI_INT32, 4 * size + 1);
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allgather_base(pg, &flat_out, &in, w); },
          {"allgather_base", ("group size (" + std::to_string(size) + ")").c_str()});
  // gather/scatter: root-only lists.
  int other = (rank + 1) % size;
  if (size > 1) {
    Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_gather(pg, list.data(), &in, other, w); },
            {"gather", "outputs must be NULL on non-root rank", ("root is rank " + std::to_string(other)).c_str()});
    Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_scatter(pg, &in, list.data(), other, w); },
            {"scatter", "inputs must be NULL on non-root rank"});
  }
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_gather(pg, nullptr, &in, rank, w); },
          {"gather", "outputs is NULL on the root"});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_scatter(pg, &in, nullptr, rank, w); },
          {"scatter", "inputs is NULL on the root"});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_gather(pg, list.data(), &in, size, w); },
          {"gather", "root"});
  bad = list;
  bad[0].shape[0] = 5;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_scatter(pg, &in, bad.data(), rank, w); },
          {"scatter", "inputs[0] has 5 elements", "output has 4"});
  // reduce_scatter: inputs like the output; op defined on the dtype.
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_reduce_scatter(pg, &in, bad.data(), EVMPI_SUM, w); },
          {"reduce_scatter", "inputs[0] has 5 elements"});
  std::vector<float> fl(4 * size);
  std::vector<evmpi_tensor_t> flist(size);
  for (int r = 0; r < size; r++)
    flist[r] = evmpi_tensor_flat(&fl[4 * r], EVMPI_FLOAT32, 4);
  evmpi_tensor_t fout = evmpi_tensor_flat(fl.data(), EVMPI_FLOAT32, 4);
  Rejects(EVMPI_ERR_UNSUPPORTED, [&](evmpi_work_t **w) { return evmpi_reduce_scatter(pg, &fout, flist.data(), EVMPI_BXOR, w); },
          {"reduce_scatter", "bxor", "float32"});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_reduce(pg, &in, EVMPI_SUM, -3, w); },
          {"reduce", "root -3"});
  // coalesced: empty lists.
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allreduce_coalesced(pg, &in, 0, EVMPI_SUM, w); },
          {"allreduce_coalesced", "count 0"});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allgather_coalesced(pg, list.data(), &in, 0, w); },
          {"allgather_coalesced", "count 0"});
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allgather_coalesced(pg, bad.data(), &in, 1, w); },
          {"allgather_coalesced", "has 5 elements", "inputs[0] has 4"});
  // alltoall lists: a dtype that differs.
  bad = list;
  bad[size - 1].dtype = EVMPI_INT64;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_alltoall(pg, bad.data(), list.data(), w); },
          {"alltoall", ("outputs[" + std::to_string(size - 1) + "] is int64").c_str(), "inputs[0] is int32"});
}

TEST_F(Validation, AlltoallSplits) {
  std::vector<int32_t> a(6 * size, 0), b(6 * size, 0);
  evmpi_tensor_t in = evmpi_tensor_flat(a.data(), EVMPI_INT32, 6 * size);
  evmpi_tensor_t out = evmpi_tensor_flat(b.data(), EVMPI_INT32, 6 * size);
  in.ndim = out.ndim = 2;
  in.shape[0] = out.shape[0] = 3 * size;
  in.shape[1] = out.shape[1] = 2;
  std::vector<int64_t> splits(size, 3);
  // Splits that sum to more, or less, than the rows; a negative split.
  splits[0] = 4;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_alltoall_base(pg, &out, &in, nullptr, splits.data(), w); },
          {"alltoall_base", "input_splits sum to", ("input has " + std::to_string(3 * size) + " along dim 0").c_str()});
  splits[0] = 2;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_alltoall_base(pg, &out, &in, splits.data(), nullptr, w); },
          {"alltoall_base", "output_splits sum to", std::to_string(3 * size - 1).c_str()});
  splits[0] = -1;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_alltoall_base(pg, &out, &in, nullptr, splits.data(), w); },
          {"alltoall_base", "input_splits[0] is -1"});
  // Equal split: dim 0 must divide by the group size.
  if (size > 1) {
    evmpi_tensor_t odd = in;
    odd.shape[0] = 3 * size + 1;
    odd.shape[1] = 1;
    evmpi_tensor_t odd_out = odd;
    odd_out.data = b.data();
    Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_alltoall_base(pg, &odd_out, &odd, nullptr, nullptr, w); },
            {"alltoall_base", "does not divide equally", ("group size (" + std::to_string(size) + ")").c_str()});
  }
  // Equal split with different sizes; rows of different widths; ndim 0.
  evmpi_tensor_t small = out;
  small.shape[0] = size;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_alltoall_base(pg, &small, &in, nullptr, nullptr, w); },
          {"alltoall_base", "same size"});
  evmpi_tensor_t wide = out;
  wide.shape[0] = size;
  wide.shape[1] = 6;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_alltoall_base(pg, &wide, &in, nullptr, nullptr, w); },
          {"alltoall_base", "rows have 2 elements", "have 6"});
  evmpi_tensor_t scalar = good();
  scalar.ndim = 0;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_alltoall_base(pg, &out, &scalar, nullptr, nullptr, w); },
          {"alltoall_base", "no dim 0"});
  evmpi_tensor_t fl = out;
  fl.dtype = EVMPI_FLOAT32;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_alltoall_base(pg, &fl, &in, nullptr, nullptr, w); },
          {"alltoall_base", "output is float32 but input is int32"});
}

// Shapes whose sizes only overflow in the arithmetic an operation does
// with them: times the group size, added up over a list, the rows of an
// empty tensor. None may be queued (the overflowed size would have been
// used to allocate and to point MPI at), each names its argument. The
// descriptors point at a few real bytes: nothing may read past them.
TEST_F(Validation, SizesThatOverflowInTheOperation) {
  alignas(16) static char bytes[64];
  int rank = evmpi_pg_rank(pg);
  // 2^58 + 1 complex128: 2^62 + 16 bytes, a valid tensor; twice that is not.
  const int64_t huge = ((int64_t)1 << 58) + 1;
  evmpi_tensor_t big = evmpi_tensor_flat(bytes, EVMPI_COMPLEX128, huge);
  std::vector<evmpi_tensor_t> bigs(size, big);
  std::string ranks = "each of the group's " + std::to_string(size) + " ranks overflow";
  if (size > 1) {
    Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allgather(pg, bigs.data(), &big, w); },
            {"allgather: input: 288230376151711745 elements of 16 bytes", ranks.c_str()});
    evmpi_tensor_t small = evmpi_tensor_flat(bytes, EVMPI_COMPLEX128, 4);
    Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allgather_base(pg, &small, &big, w); },
            {"allgather_base: input:", ranks.c_str()});
    Rejects(EVMPI_ERR_INVALID,
            [&](evmpi_work_t **w) { return evmpi_gather(pg, rank == 0 ? bigs.data() : nullptr, &big, 0, w); },
            {"gather: input:", ranks.c_str()});
    Rejects(EVMPI_ERR_INVALID,
            [&](evmpi_work_t **w) { return evmpi_scatter(pg, &big, rank == 0 ? bigs.data() : nullptr, 0, w); },
            {"scatter: output:", ranks.c_str()});
    Rejects(EVMPI_ERR_INVALID,
            [&](evmpi_work_t **w) { return evmpi_reduce_scatter(pg, &big, bigs.data(), EVMPI_SUM, w); },
            {"reduce_scatter: output:", ranks.c_str()});
  }
  // At any size: two such tensors add up past INT64_MAX bytes.
  evmpi_tensor_t two[2] = {big, big};
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allreduce_coalesced(pg, two, 2, EVMPI_SUM, w); },
          {"allreduce_coalesced: tensors:", "more than INT64_MAX bytes (at tensors[1])"});
  std::vector<evmpi_tensor_t> outs(2 * size, big);
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_allgather_coalesced(pg, outs.data(), two, 2, w); },
          {"allgather_coalesced: inputs:", "more than INT64_MAX bytes (at inputs[1])"});
  // More elements than a derived datatype of int counts describes.
  evmpi_tensor_t vast = evmpi_tensor_flat(bytes, EVMPI_UINT8, (int64_t)1 << 61);
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_recv(pg, &vast, rank, 0, w); },
          {"recv: tensor: 2305843009213693952 elements are more than one MPI datatype describes"});
  // An empty tensor whose rows (shape[1..]) overflow.
  evmpi_tensor_t empty = evmpi_tensor_flat(bytes, EVMPI_INT32, 0);
  empty.ndim = 3;
  empty.shape[1] = empty.shape[2] = (int64_t)1 << 32;
  Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_alltoall_base(pg, &empty, &empty, nullptr, nullptr, w); },
          {"alltoall_base: input: the shape's size overflows"});
  // Splits whose sum overflows.
  if (size > 1) {
    std::vector<int32_t> a(2 * size);
    evmpi_tensor_t in = evmpi_tensor_flat(a.data(), EVMPI_INT32, 2 * size);
    std::vector<int64_t> splits(size, 0);
    splits[0] = 2 * size;
    splits[1] = INT64_MAX;
    Rejects(EVMPI_ERR_INVALID, [&](evmpi_work_t **w) { return evmpi_alltoall_base(pg, &in, &in, nullptr, splits.data(), w); },
            {"alltoall_base: input_splits sum to at least 9223372036854775807 rows"});
  }
}

} // namespace

int main(int argc, char **argv) { return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE); }
