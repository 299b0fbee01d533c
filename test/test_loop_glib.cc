// test_loop_glib.cc: the GLib adapter. Callbacks run while the context is
// iterated; a destroy from a callback destroys the adapter's source (it
// is no longer found in the context); so does a destroy with the context
// idle; a group of another loop, or one attached twice, is refused.
#include "harness.h"

#include <evmpi/glib.h>
#include <glib.h>

#include <string>

namespace {

class Glib : public ExternalLoopTest {
protected:
  void SetUp() override {
    ctx = g_main_context_new();
    ExternalLoopTest::SetUp();
  }
  void TearDown() override {
    DestroyGroup(); // destroys the adapter's source: before the context goes
    g_main_context_unref(ctx);
    ExternalLoopTest::TearDown();
  }
  GMainContext *ctx = nullptr;
};

TEST_F(Glib, CallbacksRunInTheContextAndDestroyFromOneRemovesTheSource) {
  guint id = 0;
  ASSERT_EQ(evmpi_glib_attach(pg, ctx, &id), EVMPI_OK) << evmpi_last_error();
  ASSERT_NE(g_main_context_find_source_by_id(ctx, id), nullptr);
  evmpi_work_t *w = AllreduceThatDestroys();
  ASSERT_NE(w, nullptr);
  double deadline = evmpi_test_now_ms() + EVMPI_TEST_TIMEOUT_MS;
  while (g_main_context_find_source_by_id(ctx, id) && evmpi_test_now_ms() < deadline)
    if (!g_main_context_iteration(ctx, FALSE))
      g_usleep(1000);
  EXPECT_EQ(g_main_context_find_source_by_id(ctx, id), nullptr) << "the source outlived the group";
  EXPECT_EQ(cb_ran, 1);
  EXPECT_TRUE(cb_sum_ok);
  evmpi_work_release(w);
}

TEST_F(Glib, DestroyWithTheContextIdleRemovesTheSource) {
  guint id = 0;
  ASSERT_EQ(evmpi_glib_attach(pg, ctx, &id), EVMPI_OK) << evmpi_last_error();
  evmpi_work_t *w = CountedBarrier();
  ASSERT_NE(w, nullptr);
  DestroyGroup();
  EXPECT_EQ(cb_ran, 1);
  EXPECT_EQ(g_main_context_find_source_by_id(ctx, id), nullptr);
  evmpi_work_release(w);
}

TEST_F(Glib, Refusals) {
  EXPECT_EQ(evmpi_glib_attach(nullptr, ctx, nullptr), EVMPI_ERR_INVALID);
  ASSERT_EQ(evmpi_glib_attach(pg, ctx, nullptr), EVMPI_OK);
  EXPECT_EQ(evmpi_glib_attach(pg, ctx, nullptr), EVMPI_ERR_STATE) << "attached twice";
  evmpi_pg_t *own = nullptr;
  ASSERT_EQ(evmpi_pg_create(nullptr, nullptr, 0, &own), EVMPI_OK);
  EXPECT_EQ(evmpi_glib_attach(own, ctx, nullptr), EVMPI_ERR_STATE) << "a group with its own loop";
  evmpi_pg_destroy(own);
}

} // namespace

int main(int argc, char **argv) {
  return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE);
}
