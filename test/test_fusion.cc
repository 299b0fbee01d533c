// test_fusion.cc: bursts of small allreduces that every rank holds run as
// one MPI_Allreduce (EVMPI_COLL_FUSE_BYTES, lib/fuse.c). Exact results,
// callbacks one per work in submission order on the loop thread, records
// that show the sets, every rank fusing the same works however its
// submissions are timed (a rank that fused what another ran alone would
// make MPI calls of other counts: wrong sums or a hang), and the setting's
// 0 turning it off. test_cuda's simulated runtime covers device tensors
// and a set that times out.
#include "harness.h"

#include <event2/event.h>
#include <pthread.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// Work i of a burst, the same on every rank: runs of 40 share a dtype and
// an op (int32 sum, float64 average, int64 max), so a set ends where the
// kind changes; lengths vary, so sets also end at the byte limit; every
// 97th is longer than the default limit and can neither lead nor join.
struct Spec {
  evmpi_dtype_t dtype;
  evmpi_reduce_op_t op;
  int64_t n;
};

Spec spec(int i) {
  static const evmpi_dtype_t dt[] = {EVMPI_INT32, EVMPI_FLOAT64, EVMPI_INT64};
  static const evmpi_reduce_op_t op[] = {EVMPI_SUM, EVMPI_AVG, EVMPI_MAX};
  int k = (i / 40) % 3;
  return {dt[k], op[k], i % 97 == 96 ? 20000 : 1 + (i * 37) % 300};
}

// The allreduces of one burst, their buffers, and the order their
// callbacks ran in. Element j of work i holds i + j + rank.
struct Burst {
  evmpi_pg_t *pg;
  int rank, size, total;
  std::vector<std::vector<unsigned char>> bufs;
  std::vector<evmpi_tensor_t> ts;
  std::vector<evmpi_work_t *> ws;
  std::vector<int> seen;
  std::vector<int> args;
  pthread_t loop_thread;
  bool wrong_thread = false;
  int submitted = 0, failed = 0;

  Burst(evmpi_pg_t *g, int n)
      : pg(g), rank(evmpi_pg_rank(g)), size(evmpi_pg_size(g)), total(n), bufs(n), ts(n),
        ws(n, nullptr), args(n), loop_thread(pthread_self()) {
    for (int i = 0; i < n; i++) {
      Spec s = spec(i);
      bufs[i].resize((size_t)s.n * evmpi_dtype_size(s.dtype));
      for (int64_t j = 0; j < s.n; j++) {
        int64_t v = i + j + rank;
        unsigned char *at = bufs[i].data() + (size_t)j * evmpi_dtype_size(s.dtype);
        if (s.dtype == EVMPI_INT32) {
          int32_t x = (int32_t)v;
          memcpy(at, &x, sizeof x);
        } else if (s.dtype == EVMPI_FLOAT64) {
          double x = (double)v;
          memcpy(at, &x, sizeof x);
        } else {
          memcpy(at, &v, sizeof v);
        }
      }
      ts[i] = evmpi_tensor_flat(bufs[i].data(), s.dtype, s.n);
      args[i] = i;
    }
  }
  ~Burst() {
    for (auto *w : ws)
      evmpi_work_release(w);
  }
  // Submits the next work; callback arguments point into args.
  void SubmitNext();
  bool AllSeen() const { return (int)seen.size() == total; }
  enum Sets { kSomeFused, kNoneFused, kEither };
  void Check(Sets sets);
};

struct CbArg {
  Burst *b;
  int i;
};

void on_done(evmpi_work_t *w, void *arg) {
  (void)w;
  auto *a = static_cast<CbArg *>(arg);
  if (!pthread_equal(pthread_self(), a->b->loop_thread))
    a->b->wrong_thread = true;
  a->b->seen.push_back(a->i);
  delete a;
}

void Burst::SubmitNext() {
  int i = submitted++;
  Spec s = spec(i);
  if (evmpi_allreduce(pg, &ts[i], s.op, &ws[i]) != EVMPI_OK ||
      evmpi_work_on_complete(ws[i], on_done, new CbArg{this, i}) != EVMPI_OK)
    failed++;
}

// Every value, the callbacks' order and thread, and the records: works
// fused into one call share their finish (the first keeps its own start,
// the others start when the set does), and a work not fused with the one
// before starts when that one finished or later.
void Burst::Check(Sets sets) {
  EXPECT_FALSE(wrong_thread);
  ASSERT_EQ((int)seen.size(), total);
  for (int i = 0; i < total; i++) {
    ASSERT_EQ(seen[i], i) << "callback " << i;
  }
  int fused_pairs = 0;
  evmpi_work_record_t prev = {};
  for (int i = 0; i < total; i++) {
    ASSERT_EQ(evmpi_work_status(ws[i]), EVMPI_OK) << i << ": " << evmpi_work_error(ws[i]);
    Spec s = spec(i);
    for (int64_t j = 0; j < s.n; j++) {
      int64_t base = i + j;
      const unsigned char *at = bufs[i].data() + (size_t)j * evmpi_dtype_size(s.dtype);
      if (s.dtype == EVMPI_INT32) {
        int32_t x;
        memcpy(&x, at, sizeof x);
        ASSERT_EQ(x, (int32_t)(size * base + size * (size - 1) / 2)) << "sum " << i << "[" << j << "]";
      } else if (s.dtype == EVMPI_FLOAT64) {
        double x;
        memcpy(&x, at, sizeof x);
        ASSERT_EQ(x, (double)base + (size - 1) / 2.0) << "avg " << i << "[" << j << "]";
      } else {
        int64_t x;
        memcpy(&x, at, sizeof x);
        ASSERT_EQ(x, base + size - 1) << "max " << i << "[" << j << "]";
      }
    }
    evmpi_work_record_t r;
    ASSERT_EQ(evmpi_work_get_record(ws[i], &r), EVMPI_OK);
    EXPECT_LE(r.queued_ns, r.started_ns) << i;
    EXPECT_LT(r.started_ns, r.finished_ns) << i;
    if (i > 0) {
      bool fused = r.finished_ns == prev.finished_ns;
      fused_pairs += fused;
      if (fused) {
        Spec p = spec(i - 1);
        EXPECT_EQ(p.dtype, s.dtype) << i << " fused with " << i - 1 << " of another dtype";
        EXPECT_NE(s.n, 20000) << i << " is over the limit, yet fused";
        EXPECT_NE(p.n, 20000) << i - 1 << " is over the limit, yet fused";
        EXPECT_GE(r.started_ns, prev.started_ns) << i;
      } else {
        EXPECT_GE(r.started_ns, prev.finished_ns) << i << " started before " << i - 1
                                                  << " finished";
      }
    }
    prev = r;
  }
  if (sets == kSomeFused)
    EXPECT_GT(fused_pairs, 0) << "nothing was fused";
  else if (sets == kNoneFused)
    EXPECT_EQ(fused_pairs, 0);
}

// A group over the world on its own loop, with fusion at fuse_bytes.
struct FuseLoop {
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  explicit FuseLoop(size_t fuse_bytes) {
    evmpi_pg_options_t *o = nullptr;
    EXPECT_EQ(evmpi_pg_options_new(&o), EVMPI_OK);
    EXPECT_EQ(evmpi_pg_options_set_ignore_env(o, true), EVMPI_OK);
    EXPECT_EQ(evmpi_pg_options_set_coll_fuse_bytes(o, fuse_bytes), EVMPI_OK) << evmpi_last_error();
    EXPECT_EQ(evmpi_pg_create_with(base, nullptr, 0, o, &pg), EVMPI_OK) << evmpi_last_error();
    evmpi_pg_options_free(o);
  }
  ~FuseLoop() {
    evmpi_pg_destroy(pg);
    event_base_free(base);
  }
};

class Fusion : public MpiTest {};

// Queues a burst of n at once and runs the loop until every callback ran.
void RunQueued(FuseLoop &l, Burst &b) {
  for (int i = 0; i < b.total; i++)
    b.SubmitNext();
  ASSERT_EQ(b.failed, 0) << evmpi_last_error();
  ASSERT_TRUE(evmpi_test_run_until(
      l.base, [](void *a) { return static_cast<Burst *>(a)->AllSeen(); }, &b,
      EVMPI_TEST_TIMEOUT_MS));
}

// Every rank queues the whole burst at once: the gates soon agree on many
// held works, and the sets form.
TEST_F(Fusion, AQueuedBurstFusesAndStaysExact) {
  FuseLoop l(64 << 10);
  ASSERT_NE(l.pg, nullptr);
  Burst b(l.pg, 600);
  RunQueued(l, b);
  // One rank has no gate, and so no credit to fuse on.
  b.Check(b.size > 1 ? Burst::kSomeFused : Burst::kNoneFused);
}

TEST_F(Fusion, ZeroBytesTurnsItOff) {
  FuseLoop l(0);
  ASSERT_NE(l.pg, nullptr);
  Burst b(l.pg, 300);
  RunQueued(l, b);
  b.Check(Burst::kNoneFused);
}

// Rank 0 queues the burst at once; the others submit it from callbacks, a
// few works per completion, so that their collectives run on the loop
// thread, on the worker, alone and in sets, at moments rank 0 cannot
// foresee. Each rank still makes the same calls: the sums are exact and
// nothing hangs. (The loop thread once ran alone the leader of a set the
// other ranks' workers fused: the next allreduce hung.)
struct Trickle {
  Burst *b;
  int done = 0;
};

void trickle_cb(evmpi_work_t *w, void *arg) {
  (void)w;
  auto *t = static_cast<Trickle *>(arg);
  int more = 1 + t->done++ % 3;
  for (int k = 0; k < more && t->b->submitted < t->b->total; k++) {
    int i = t->b->submitted;
    t->b->SubmitNext();
    if (t->b->ws[i])
      evmpi_work_on_complete(t->b->ws[i], trickle_cb, t);
  }
}

TEST_F(Fusion, RanksThatSubmitOnTheirOwnTimeFuseTheSameWorks) {
  FuseLoop l(64 << 10);
  ASSERT_NE(l.pg, nullptr);
  for (int round = 0; round < 3; round++) {
    SCOPED_TRACE(round);
    Burst b(l.pg, 500);
    Trickle t{&b};
    if (b.rank == round % b.size) {
      for (int i = 0; i < b.total; i++)
        b.SubmitNext();
    } else {
      b.SubmitNext();
      if (b.ws[0])
        evmpi_work_on_complete(b.ws[0], trickle_cb, &t);
    }
    ASSERT_TRUE(evmpi_test_run_until(
        l.base, [](void *a) { return static_cast<Burst *>(a)->AllSeen(); }, &b,
        EVMPI_TEST_TIMEOUT_MS));
    ASSERT_EQ(b.failed, 0) << evmpi_last_error();
    // Whether sets form depends on the timing; that they are right does not.
    b.Check(Burst::kEither);
  }
}

} // namespace

int main(int argc, char **argv) { return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE); }
