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

class Uv : public ExternalLoopTest {
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
    ExternalLoopTest::SetUp();
  }
  void TearDown() override {
    DestroyGroup(); // closes the adapter's handle: before the loop is closed
    uv_close(reinterpret_cast<uv_handle_t *>(&guard), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT); // the close callbacks
    EXPECT_EQ(uv_loop_close(&loop), 0) << "a handle of the adapter was left open";
    ExternalLoopTest::TearDown();
  }
  uv_loop_t loop;
  uv_timer_t guard;
  bool timed_out = false;
};

TEST_F(Uv, CallbacksRunInUvRunAndDestroyFromOneEndsTheLoop) {
  ASSERT_EQ(evmpi_uv_attach(pg, &loop), EVMPI_OK) << evmpi_last_error();
  evmpi_work_t *w = AllreduceThatDestroys();
  ASSERT_NE(w, nullptr);
  uv_run(&loop, UV_RUN_DEFAULT); // returns once the adapter's handle is closed
  EXPECT_FALSE(timed_out);
  EXPECT_EQ(cb_ran, 1);
  EXPECT_TRUE(cb_sum_ok);
  evmpi_work_release(w);
}

TEST_F(Uv, DestroyWithTheLoopStoppedClosesTheHandle) {
  ASSERT_EQ(evmpi_uv_attach(pg, &loop), EVMPI_OK) << evmpi_last_error();
  EXPECT_TRUE(uv_loop_alive(&loop)) << "the group's handle keeps the loop alive";
  evmpi_work_t *w = CountedBarrier();
  ASSERT_NE(w, nullptr);
  DestroyGroup();
  EXPECT_EQ(cb_ran, 1);
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
