// test_loop_uv.cc: the libuv adapter. Callbacks run inside uv_run; a
// destroy from a callback closes the adapter's handle, so uv_run returns
// for want of handles; a destroy with the loop stopped does too (the loop
// closes cleanly); a group of another loop, or one attached twice, is
// refused. A timer (unreferenced: it keeps no loop alive) turns a hang
// into a failure.
#include "harness.h"

#include <evmpi/uv.h>
#include <uv.h>

#include <string>

namespace {

class Uv : public MpiTest {
protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop), 0);
    ASSERT_EQ(uv_timer_init(&loop, &guard), 0);
    guard.data = this;
    ASSERT_EQ(uv_timer_start(&guard, [](uv_timer_t *t) {
      static_cast<Uv *>(t->data)->timed_out = true;
      uv_stop(t->loop);
    }, EVMPI_TEST_TIMEOUT_MS, 0), 0);
    uv_unref(reinterpret_cast<uv_handle_t *>(&guard));
    ASSERT_EQ(evmpi_pg_options_new(&opts), EVMPI_OK);
    ASSERT_EQ(evmpi_pg_options_set_loop(opts, EVMPI_LOOP_EXTERNAL), EVMPI_OK);
    ASSERT_EQ(evmpi_pg_create_with(nullptr, nullptr, 0, opts, &pg), EVMPI_OK) << evmpi_last_error();
  }
  void TearDown() override {
    if (pg)
      evmpi_pg_destroy(pg);
    uv_close(reinterpret_cast<uv_handle_t *>(&guard), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT); // the close callbacks
    EXPECT_EQ(uv_loop_close(&loop), 0) << "a handle of the adapter was left open";
    evmpi_pg_options_free(opts);
    MpiTest::TearDown();
  }
  uv_loop_t loop;
  uv_timer_t guard;
  bool timed_out = false;
  evmpi_pg_options_t *opts = nullptr;
  evmpi_pg_t *pg = nullptr;
};

struct Sum {
  evmpi_pg_t *pg;
  int32_t x = 1;
  int ran = 0;
  bool ok = false;
};

TEST_F(Uv, CallbacksRunInUvRunAndDestroyFromOneEndsTheLoop) {
  ASSERT_EQ(evmpi_uv_attach(pg, &loop), EVMPI_OK) << evmpi_last_error();
  Sum s{pg};
  evmpi_tensor_t t = evmpi_tensor_flat(&s.x, EVMPI_INT32, 1);
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK);
  ASSERT_EQ(evmpi_work_on_complete(w, [](evmpi_work_t *w, void *arg) {
    auto *s = static_cast<Sum *>(arg);
    s->ran++;
    s->ok = evmpi_work_is_success(w) && s->x == evmpi_pg_size(s->pg);
    evmpi_pg_destroy(s->pg);
  }, &s), EVMPI_OK);
  pg = nullptr; // the callback destroys it
  uv_run(&loop, UV_RUN_DEFAULT); // returns once the adapter's handle is closed
  EXPECT_FALSE(timed_out);
  EXPECT_EQ(s.ran, 1);
  EXPECT_TRUE(s.ok);
  evmpi_work_release(w);
}

TEST_F(Uv, DestroyWithTheLoopStoppedClosesTheHandle) {
  ASSERT_EQ(evmpi_uv_attach(pg, &loop), EVMPI_OK) << evmpi_last_error();
  EXPECT_TRUE(uv_loop_alive(&loop)) << "the group's handle keeps the loop alive";
  int ran = 0;
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_barrier(pg, &w), EVMPI_OK);
  ASSERT_EQ(evmpi_work_on_complete(w, [](evmpi_work_t *, void *arg) { ++*static_cast<int *>(arg); },
                                   &ran), EVMPI_OK);
  evmpi_pg_destroy(pg);
  pg = nullptr;
  EXPECT_EQ(ran, 1);
  uv_run(&loop, UV_RUN_NOWAIT); // the handle's close callback
  EXPECT_FALSE(uv_loop_alive(&loop));
  evmpi_work_release(w);
}

TEST_F(Uv, Refusals) {
  EXPECT_EQ(evmpi_uv_attach(nullptr, &loop), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_uv_attach(pg, nullptr), EVMPI_ERR_INVALID);
  EXPECT_NE(std::string(evmpi_last_error()).find("uv_attach: loop is NULL"), std::string::npos);
  ASSERT_EQ(evmpi_uv_attach(pg, &loop), EVMPI_OK);
  EXPECT_EQ(evmpi_uv_attach(pg, &loop), EVMPI_ERR_STATE) << "attached twice";
  evmpi_pg_t *own = nullptr;
  ASSERT_EQ(evmpi_pg_create(nullptr, nullptr, 0, &own), EVMPI_OK);
  EXPECT_EQ(evmpi_uv_attach(own, &loop), EVMPI_ERR_STATE) << "a group with its own loop";
  EXPECT_NE(std::string(evmpi_last_error()).find("EVMPI_LOOP_EXTERNAL"), std::string::npos);
  evmpi_pg_destroy(own);
}

} // namespace

int main(int argc, char **argv) {
  return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE);
}
