// test_loop_glib.cc: the GLib adapter. Callbacks run while the context is
// iterated; a destroy from a callback destroys the adapter's source (it
// is no longer found in the context); so does a destroy with the context
// idle; a group of another loop, or one attached twice, is refused.
#include "harness.h"

#include <evmpi/glib.h>
#include <glib.h>

#include <string>

namespace {

class Glib : public MpiTest {
protected:
  void SetUp() override {
    ctx = g_main_context_new();
    ASSERT_EQ(evmpi_pg_options_new(&opts), EVMPI_OK);
    ASSERT_EQ(evmpi_pg_options_set_loop(opts, EVMPI_LOOP_EXTERNAL), EVMPI_OK);
    ASSERT_EQ(evmpi_pg_create_with(nullptr, nullptr, 0, opts, &pg), EVMPI_OK) << evmpi_last_error();
  }
  void TearDown() override {
    if (pg)
      evmpi_pg_destroy(pg);
    g_main_context_unref(ctx);
    evmpi_pg_options_free(opts);
    MpiTest::TearDown();
  }
  GMainContext *ctx = nullptr;
  evmpi_pg_options_t *opts = nullptr;
  evmpi_pg_t *pg = nullptr;
};

struct Sum {
  evmpi_pg_t *pg;
  int32_t x = 1;
  int ran = 0;
  bool ok = false;
};

TEST_F(Glib, CallbacksRunInTheContextAndDestroyFromOneRemovesTheSource) {
  guint id = 0;
  ASSERT_EQ(evmpi_glib_attach(pg, ctx, &id), EVMPI_OK) << evmpi_last_error();
  ASSERT_NE(g_main_context_find_source_by_id(ctx, id), nullptr);
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
  double deadline = evmpi_test_now_ms() + EVMPI_TEST_TIMEOUT_MS;
  while (g_main_context_find_source_by_id(ctx, id) && evmpi_test_now_ms() < deadline)
    if (!g_main_context_iteration(ctx, FALSE))
      g_usleep(1000);
  EXPECT_EQ(g_main_context_find_source_by_id(ctx, id), nullptr) << "the source outlived the group";
  EXPECT_EQ(s.ran, 1);
  EXPECT_TRUE(s.ok);
  evmpi_work_release(w);
}

TEST_F(Glib, DestroyWithTheContextIdleRemovesTheSource) {
  guint id = 0;
  ASSERT_EQ(evmpi_glib_attach(pg, ctx, &id), EVMPI_OK) << evmpi_last_error();
  int ran = 0;
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_barrier(pg, &w), EVMPI_OK);
  ASSERT_EQ(evmpi_work_on_complete(w, [](evmpi_work_t *, void *arg) { ++*static_cast<int *>(arg); },
                                   &ran), EVMPI_OK);
  evmpi_pg_destroy(pg);
  pg = nullptr;
  EXPECT_EQ(ran, 1);
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
