// test_mpi_env.cc: how evmpi meets MPI, built three times:
//  EVMPI_TEST_ENV_APP    the application initialised MPI with MULTIPLE: accepted
//  EVMPI_TEST_ENV_SELF   nobody initialised MPI: evmpi does, and finalises at exit
//  EVMPI_TEST_ENV_LEVEL  the application initialised MPI with SERIALIZED: refused
#include "harness.h"

#include <event2/event.h>

#include <cstring>

namespace {

class MpiEnv : public MpiTest {};

int roundtrip(evmpi_pg_t *pg, struct event_base *base) {
  int32_t v = 1;
  evmpi_tensor_t t = evmpi_tensor_flat(&v, EVMPI_INT32, 1);
  evmpi_work_t *w;
  EXPECT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK);
  EXPECT_TRUE(evmpi_test_run_until_done(base, &w, 1, EVMPI_TEST_TIMEOUT_MS));
  evmpi_work_release(w);
  return v;
}

#if defined(EVMPI_TEST_ENV_SELF)
TEST_F(MpiEnv, EvmpiInitialisesMpi) {
  int init = 1;
  MPI_Initialized(&init);
  ASSERT_EQ(init, 0) << "nothing initialised MPI before this test";
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  MPI_Initialized(&init);
  EXPECT_EQ(init, 1);
  int level = 0;
  MPI_Query_thread(&level);
  EXPECT_EQ(level, MPI_THREAD_MULTIPLE);
  EXPECT_EQ(roundtrip(pg, base), evmpi_test_world_size());
  evmpi_pg_destroy(pg);
  // A second group reuses the same MPI.
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(roundtrip(pg, base), evmpi_test_world_size());
  evmpi_pg_destroy(pg);
  event_base_free(base);
  // MPI_Finalize runs at exit (registered by evmpi); the harness's final
  // agreement still needs MPI, so it must not have run yet.
  int fin = 1;
  MPI_Finalized(&fin);
  EXPECT_EQ(fin, 0);
}
#elif defined(EVMPI_TEST_ENV_APP)
TEST_F(MpiEnv, AcceptsApplicationsMpi) {
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(roundtrip(pg, base), evmpi_test_world_size());
  evmpi_pg_destroy(pg);
  event_base_free(base);
}
#elif defined(EVMPI_TEST_ENV_LEVEL)
TEST_F(MpiEnv, RefusesTooLowThreadLevel) {
  int level = 0;
  MPI_Query_thread(&level);
  if (level >= MPI_THREAD_MULTIPLE)
    GTEST_SKIP() << "this MPI gave MPI_THREAD_MULTIPLE although SERIALIZED was asked for";
  evmpi_pg_t *pg = reinterpret_cast<evmpi_pg_t *>(1);
  EXPECT_EQ(evmpi_pg_create(nullptr, nullptr, 0, &pg), EVMPI_ERR_MPI);
  EXPECT_EQ(pg, nullptr);
  EXPECT_NE(std::strstr(evmpi_last_error(), "MPI_THREAD_SERIALIZED"), nullptr) << evmpi_last_error();
  EXPECT_NE(std::strstr(evmpi_last_error(), "MPI_THREAD_MULTIPLE"), nullptr) << evmpi_last_error();
  // Asking again gives the same answer, not a crash.
  EXPECT_EQ(evmpi_pg_create_from_comm(nullptr, MPI_COMM_WORLD, &pg), EVMPI_ERR_MPI);
}
#endif

} // namespace

int main(int argc, char **argv) {
#if defined(EVMPI_TEST_ENV_SELF)
  return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_LEAVE_TO_EVMPI);
#elif defined(EVMPI_TEST_ENV_LEVEL)
  return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_SERIALIZED);
#else
  return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE);
#endif
}
