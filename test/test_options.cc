// test_options.cc: the options object and the settings table. Each setter
// stores what it is given and refuses what is out of its row's range
// (naming itself and the variable); a group created with the options runs
// with them (evmpi_pg_get_setting, and where it shows, what the group
// does: the timeout in force, the mismatched-collective check); the
// environment wins over the options unless they ignore it; a bad value in
// the environment fails creation naming the variable; doc/settings.md
// lists exactly the table.
#include "harness.h"

#include <event2/event.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace {

class Options : public MpiTest {
protected:
  void SetUp() override {
    for (size_t i = 0; i < evmpi_settings_count(); i++) {
      evmpi_setting_info_t info;
      ASSERT_EQ(evmpi_setting_info(i, &info), EVMPI_OK);
      unsetenv(info.name); // the launcher's environment is not the test's
    }
    ASSERT_EQ(evmpi_pg_options_new(&opts), EVMPI_OK);
  }
  void TearDown() override {
    for (size_t i = 0; i < evmpi_settings_count(); i++) {
      evmpi_setting_info_t info;
      evmpi_setting_info(i, &info);
      unsetenv(info.name);
    }
    evmpi_pg_options_free(opts);
    MpiTest::TearDown();
  }
  std::string Get(const char *name) {
    char buf[4096];
    EXPECT_EQ(evmpi_pg_options_get(opts, name, buf, sizeof buf), EVMPI_OK) << evmpi_last_error();
    return buf;
  }
  static std::string Setting(evmpi_pg_t *pg, const char *name) {
    char buf[4096];
    EXPECT_EQ(evmpi_pg_get_setting(pg, name, buf, sizeof buf), EVMPI_OK) << evmpi_last_error();
    return buf;
  }
  evmpi_pg_options_t *opts = nullptr;
};

bool Contains(const char *text, const std::string &part) {
  return text && strstr(text, part.c_str()) != nullptr;
}

// What every typed setter is given and how its variable then reads.
struct Good {
  const char *name;
  int (*set)(evmpi_pg_options_t *);
  const char *want;
};

TEST_F(Options, DefaultsAreTheTable) {
  for (size_t i = 0; i < evmpi_settings_count(); i++) {
    evmpi_setting_info_t info;
    ASSERT_EQ(evmpi_setting_info(i, &info), EVMPI_OK);
    EXPECT_EQ(Get(info.name), info.default_value) << info.name;
  }
  EXPECT_EQ(Get("EVMPI_PIECE"), "1048576");
  EXPECT_EQ(Get("EVMPI_LOOP_HOLD_US"), "500");
  EXPECT_EQ(Get("EVMPI_CUDA_AWARE"), "auto");
  evmpi_setting_info_t info;
  EXPECT_EQ(evmpi_setting_info(evmpi_settings_count(), &info), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_setting_info(0, nullptr), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_pg_options_new(nullptr), EVMPI_ERR_INVALID);
  evmpi_pg_options_free(nullptr);
}

TEST_F(Options, EachSetterIsAppliedToTheGroup) {
  const Good good[] = {
      {"EVMPI_TIMEOUT_MS", [](evmpi_pg_options_t *o) { return evmpi_pg_options_set_timeout_ms(o, 60000); }, "60000"},
      {"EVMPI_DEBUG", [](evmpi_pg_options_t *o) { return evmpi_pg_options_set_debug(o, EVMPI_DEBUG_DETAIL); }, "detail"},
      {"EVMPI_PIECE", [](evmpi_pg_options_t *o) { return evmpi_pg_options_set_piece_bytes(o, 64 * 1024); }, "65536"},
      {"EVMPI_LOOP_P2P_POLL_US", [](evmpi_pg_options_t *o) { return evmpi_pg_options_set_loop_p2p_poll_us(o, 0); }, "0"},
      {"EVMPI_LOOP_HOLD_US", [](evmpi_pg_options_t *o) { return evmpi_pg_options_set_loop_hold_us(o, 3000); }, "3000"},
      {"EVMPI_CUDA_AWARE", [](evmpi_pg_options_t *o) { return evmpi_pg_options_set_cuda_aware(o, EVMPI_CUDA_AWARE_NO); }, "0"},
      {"EVMPI_CUDA_STAGING", [](evmpi_pg_options_t *o) { return evmpi_pg_options_set_cuda_staging(o, false); }, "0"},
      {"EVMPI_CUDA_CHUNK", [](evmpi_pg_options_t *o) { return evmpi_pg_options_set_cuda_chunk(o, 8u << 20); }, "8388608"},
      {"EVMPI_EXIT_WAIT_MS", [](evmpi_pg_options_t *o) { return evmpi_pg_options_set_exit_wait_ms(o, 7000); }, "7000"},
      {"EVMPI_ARRIVAL_GATE", [](evmpi_pg_options_t *o) { return evmpi_pg_options_set_arrival_gate(o, 0); }, "0"},
      {"EVMPI_P2P_IDLE_POLL_MS", [](evmpi_pg_options_t *o) { return evmpi_pg_options_set_p2p_idle_poll_ms(o, 5); }, "5"},
      {"EVMPI_LOOP_COLLECTIVES", [](evmpi_pg_options_t *o) { return evmpi_pg_options_set_loop_collectives(o, 0); }, "0"},
      {"EVMPI_COLL_IDLE_POLL_US", [](evmpi_pg_options_t *o) { return evmpi_pg_options_set_coll_idle_poll_us(o, 2000); }, "2000"},
      {"EVMPI_COLL_FUSE_BYTES", [](evmpi_pg_options_t *o) { return evmpi_pg_options_set_coll_fuse_bytes(o, 0); }, "0"},
  };
  for (const Good &g : good) {
    ASSERT_EQ(g.set(opts), EVMPI_OK) << g.name << ": " << evmpi_last_error();
    EXPECT_EQ(Get(g.name), g.want) << g.name;
  }
  // The environment says otherwise, and is ignored.
  setenv("EVMPI_PIECE", "2M", 1);
  setenv("EVMPI_DEBUG", "off", 1);
  ASSERT_EQ(evmpi_pg_options_set_ignore_env(opts, true), EVMPI_OK);
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create_with(base, nullptr, 0, opts, &pg), EVMPI_OK) << evmpi_last_error();
  for (const Good &g : good)
    EXPECT_EQ(Setting(pg, g.name), g.want) << g.name;
  // The timeout is the worker's, not a copy: set_timeout shows.
  ASSERT_EQ(evmpi_pg_set_timeout(pg, 1234), EVMPI_OK);
  EXPECT_EQ(Setting(pg, "EVMPI_TIMEOUT_MS"), "1234");
  // The group works with them.
  int32_t x = 1;
  evmpi_tensor_t t = evmpi_tensor_flat(&x, EVMPI_INT32, 1);
  evmpi_work_t *w = nullptr;
  ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK) << evmpi_last_error();
  ASSERT_TRUE(evmpi_test_run_until_done(base, &w, 1, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(evmpi_work_status(w), EVMPI_OK) << evmpi_work_error(w);
  EXPECT_EQ(x, evmpi_pg_size(pg));
  evmpi_work_release(w);
  evmpi_pg_destroy(pg);
  // Back to the default exit wait for the rest of the run.
  evmpi_pg_options_t *reset = nullptr;
  ASSERT_EQ(evmpi_pg_options_new(&reset), EVMPI_OK);
  ASSERT_EQ(evmpi_pg_options_set_exit_wait_ms(reset, 5000), EVMPI_OK);
  ASSERT_EQ(evmpi_pg_create_with(base, nullptr, 0, reset, &pg), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(Setting(pg, "EVMPI_EXIT_WAIT_MS"), "5000");
  evmpi_pg_destroy(pg);
  evmpi_pg_options_free(reset);
  event_base_free(base);
}

TEST_F(Options, OutOfRangeIsRefusedNamingTheSetterAndTheVariable) {
  struct Bad {
    std::function<int()> call;
    const char *setter, *name, *range;
  };
  evmpi_pg_options_t *o = opts;
  const Bad bad[] = {
      {[o] { return evmpi_pg_options_set_timeout_ms(o, -1); }, "pg_options_set_timeout_ms: -1", "EVMPI_TIMEOUT_MS", "0..2147483647"},
      {[o] { return evmpi_pg_options_set_timeout_ms(o, (int64_t)1 << 40); }, "pg_options_set_timeout_ms: 1099511627776", "EVMPI_TIMEOUT_MS", "0..2147483647"},
      {[o] { return evmpi_pg_options_set_debug(o, (evmpi_debug_t)7); }, "pg_options_set_debug: 7", "EVMPI_DEBUG", "off or detail"},
      {[o] { return evmpi_pg_options_set_piece_bytes(o, 24); }, "pg_options_set_piece_bytes: 24", "EVMPI_PIECE", "a power of two from 16 to 1073741824 bytes"},
      {[o] { return evmpi_pg_options_set_piece_bytes(o, 8); }, "pg_options_set_piece_bytes: 8", "EVMPI_PIECE", "a power of two"},
      {[o] { return evmpi_pg_options_set_piece_bytes(o, (size_t)2 << 30); }, "pg_options_set_piece_bytes: 2147483648", "EVMPI_PIECE", "a power of two"},
      {[o] { return evmpi_pg_options_set_piece_bytes(o, SIZE_MAX); }, "pg_options_set_piece_bytes:", "EVMPI_PIECE", "a power of two"},
      {[o] { return evmpi_pg_options_set_loop_p2p_poll_us(o, 1000001); }, "pg_options_set_loop_p2p_poll_us: 1000001", "EVMPI_LOOP_P2P_POLL_US", "0..1000000"},
      {[o] { return evmpi_pg_options_set_loop_p2p_poll_us(o, -1); }, "pg_options_set_loop_p2p_poll_us: -1", "EVMPI_LOOP_P2P_POLL_US", "0..1000000"},
      {[o] { return evmpi_pg_options_set_loop_hold_us(o, 0); }, "pg_options_set_loop_hold_us: 0", "EVMPI_LOOP_HOLD_US", "microseconds in 1..1000000"},
      {[o] { return evmpi_pg_options_set_cuda_aware(o, (evmpi_cuda_aware_t)3); }, "pg_options_set_cuda_aware: 3", "EVMPI_CUDA_AWARE", "auto, 0 or 1"},
      {[o] { return evmpi_pg_options_set_cuda_chunk(o, 96); }, "pg_options_set_cuda_chunk: 96", "EVMPI_CUDA_CHUNK", "a power of two"},
      {[o] { return evmpi_pg_options_set_exit_wait_ms(o, 3600001); }, "pg_options_set_exit_wait_ms: 3600001", "EVMPI_EXIT_WAIT_MS", "0..3600000"},
      {[o] { return evmpi_pg_options_set_exit_wait_ms(o, -5); }, "pg_options_set_exit_wait_ms: -5", "EVMPI_EXIT_WAIT_MS", "0..3600000"},
      {[o] { return evmpi_pg_options_set_p2p_idle_poll_ms(o, 0); }, "pg_options_set_p2p_idle_poll_ms: 0", "EVMPI_P2P_IDLE_POLL_MS", "milliseconds in 1..1000"},
      {[o] { return evmpi_pg_options_set_p2p_idle_poll_ms(o, 1001); }, "pg_options_set_p2p_idle_poll_ms: 1001", "EVMPI_P2P_IDLE_POLL_MS", "milliseconds in 1..1000"},
      {[o] { return evmpi_pg_options_set_loop_collectives(o, 2); }, "pg_options_set_loop_collectives: 2", "EVMPI_LOOP_COLLECTIVES", "0 or 1"},
      {[o] { return evmpi_pg_options_set_coll_idle_poll_us(o, 0); }, "pg_options_set_coll_idle_poll_us: 0", "EVMPI_COLL_IDLE_POLL_US", "microseconds in 1..1000000"},
      {[o] { return evmpi_pg_options_set_coll_idle_poll_us(o, 1000001); }, "pg_options_set_coll_idle_poll_us: 1000001", "EVMPI_COLL_IDLE_POLL_US", "microseconds in 1..1000000"},
      {[o] { return evmpi_pg_options_set_coll_fuse_bytes(o, (16u << 20) + 1); }, "pg_options_set_coll_fuse_bytes: 16777217", "EVMPI_COLL_FUSE_BYTES", "a number of bytes from 0 to 16777216"},
  };
  for (const Bad &b : bad) {
    EXPECT_EQ(b.call(), EVMPI_ERR_INVALID) << b.setter;
    EXPECT_TRUE(Contains(evmpi_last_error(), b.setter)) << evmpi_last_error();
    EXPECT_TRUE(Contains(evmpi_last_error(), std::string("(") + b.name + ")")) << evmpi_last_error();
    EXPECT_TRUE(Contains(evmpi_last_error(), b.range)) << evmpi_last_error();
  }
  // One at a time, for the messages.
  EXPECT_EQ(evmpi_pg_options_set_piece_bytes(opts, 24), EVMPI_ERR_INVALID);
  EXPECT_TRUE(Contains(evmpi_last_error(), "pg_options_set_piece_bytes: 24 is not a power of two "
                                           "from 16 to 1073741824 bytes")) << evmpi_last_error();
  EXPECT_TRUE(Contains(evmpi_last_error(), "(EVMPI_PIECE)")) << evmpi_last_error();
  EXPECT_EQ(evmpi_pg_options_set_loop_hold_us(opts, 0), EVMPI_ERR_INVALID);
  EXPECT_TRUE(Contains(evmpi_last_error(), "pg_options_set_loop_hold_us: 0 is not a number of "
                                           "microseconds in 1..1000000 (EVMPI_LOOP_HOLD_US)"))
      << evmpi_last_error();
  EXPECT_EQ(evmpi_pg_options_set_cuda_aware(opts, (evmpi_cuda_aware_t)3), EVMPI_ERR_INVALID);
  EXPECT_TRUE(Contains(evmpi_last_error(), "pg_options_set_cuda_aware: 3 is not auto, 0 or 1 "
                                           "(EVMPI_CUDA_AWARE)")) << evmpi_last_error();
  EXPECT_EQ(evmpi_pg_options_set_exit_wait_ms(opts, -5), EVMPI_ERR_INVALID);
  EXPECT_TRUE(Contains(evmpi_last_error(), "(EVMPI_EXIT_WAIT_MS)")) << evmpi_last_error();
  std::string longpath(5000, 'x');
  EXPECT_EQ(evmpi_pg_options_set_timeline(opts, longpath.c_str()), EVMPI_ERR_INVALID);
  EXPECT_TRUE(Contains(evmpi_last_error(), "longer than 4095 bytes (EVMPI_TIMELINE)"));
  EXPECT_EQ(evmpi_pg_options_set_loop(opts, (evmpi_loop_t)9), EVMPI_ERR_INVALID);
  // Refused values left the defaults.
  EXPECT_EQ(Get("EVMPI_PIECE"), "1048576");
  EXPECT_EQ(Get("EVMPI_LOOP_HOLD_US"), "500");
  EXPECT_EQ(Get("EVMPI_TIMEOUT_MS"), "0");
  EXPECT_EQ(Get("EVMPI_TIMELINE"), "");
  // NULL options.
  EXPECT_EQ(evmpi_pg_options_set_piece_bytes(nullptr, 64), EVMPI_ERR_INVALID);
  EXPECT_TRUE(Contains(evmpi_last_error(), "pg_options_set_piece_bytes: opts is NULL"));
  EXPECT_EQ(evmpi_pg_options_set_ignore_env(nullptr, true), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_pg_options_set_timeline(nullptr, "x"), EVMPI_ERR_INVALID);
  char buf[8];
  EXPECT_EQ(evmpi_pg_options_get(opts, "EVMPI_NOPE", buf, sizeof buf), EVMPI_ERR_INVALID);
  EXPECT_TRUE(Contains(evmpi_last_error(), "EVMPI_NOPE is not an evmpi setting"));
  EXPECT_EQ(evmpi_pg_options_get(opts, "EVMPI_PIECE", buf, 0), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_pg_get_setting(nullptr, "EVMPI_PIECE", buf, sizeof buf), EVMPI_ERR_INVALID);
}

TEST_F(Options, SetByNameParsesAsTheEnvironmentDoes) {
  EXPECT_EQ(evmpi_pg_options_set(opts, "EVMPI_PIECE", "256K"), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(Get("EVMPI_PIECE"), "262144");
  EXPECT_EQ(evmpi_pg_options_set(opts, "EVMPI_CUDA_AWARE", "1"), EVMPI_OK);
  EXPECT_EQ(Get("EVMPI_CUDA_AWARE"), "1");
  EXPECT_EQ(evmpi_pg_options_set(opts, "EVMPI_TIMELINE", "/tmp/t-%r.json"), EVMPI_OK);
  EXPECT_EQ(Get("EVMPI_TIMELINE"), "/tmp/t-%r.json");
  EXPECT_EQ(evmpi_pg_options_set(opts, "EVMPI_TIMELINE", ""), EVMPI_OK);
  EXPECT_EQ(Get("EVMPI_TIMELINE"), "");
  const char *bad[][3] = {
      {"EVMPI_PIECE", "24", "pg_options_set: EVMPI_PIECE=24 is not a power of two"},
      {"EVMPI_PIECE", "", "pg_options_set: EVMPI_PIECE= is not a power of two"},
      {"EVMPI_LOOP_P2P_POLL_US", "10ms", "EVMPI_LOOP_P2P_POLL_US=10ms is not a number of microseconds in 0..1000000"},
      {"EVMPI_DEBUG", "verbose", "EVMPI_DEBUG=verbose is not off or detail"},
      {"EVMPI_CUDA_STAGING", "yes", "EVMPI_CUDA_STAGING=yes is not 0 or 1"},
      {"EVMPI_NOPE", "1", "pg_options_set: EVMPI_NOPE is not an evmpi setting"},
  };
  for (auto &b : bad) {
    EXPECT_EQ(evmpi_pg_options_set(opts, b[0], b[1]), EVMPI_ERR_INVALID) << b[0] << "=" << b[1];
    EXPECT_TRUE(Contains(evmpi_last_error(), b[2])) << evmpi_last_error();
  }
  EXPECT_EQ(Get("EVMPI_PIECE"), "262144"); // the refused values changed nothing
  EXPECT_EQ(evmpi_pg_options_set(opts, nullptr, "1"), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_pg_options_set(opts, "EVMPI_PIECE", nullptr), EVMPI_ERR_INVALID);
}

TEST_F(Options, TheEnvironmentOverridesTheOptions) {
  ASSERT_EQ(evmpi_pg_options_set_piece_bytes(opts, 64 * 1024), EVMPI_OK);
  ASSERT_EQ(evmpi_pg_options_set_loop_hold_us(opts, 3000), EVMPI_OK);
  setenv("EVMPI_PIECE", "2M", 1);
  setenv("EVMPI_TIMEOUT_MS", "45000", 1);
  setenv("EVMPI_COLL_FUSE_BYTES", "24K", 1); // any size, not only a power of two
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create_with(base, nullptr, 0, opts, &pg), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(Setting(pg, "EVMPI_PIECE"), "2097152");      // the environment's
  EXPECT_EQ(Setting(pg, "EVMPI_LOOP_HOLD_US"), "3000");  // the options'
  EXPECT_EQ(Setting(pg, "EVMPI_TIMEOUT_MS"), "45000");   // the environment's, in the worker
  EXPECT_EQ(Setting(pg, "EVMPI_LOOP_P2P_POLL_US"), "2000"); // the default
  EXPECT_EQ(Setting(pg, "EVMPI_COLL_FUSE_BYTES"), "24576");
  unsetenv("EVMPI_COLL_FUSE_BYTES");
  evmpi_pg_destroy(pg);
  // No options at all: the environment and the defaults.
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(Setting(pg, "EVMPI_PIECE"), "2097152");
  EXPECT_EQ(Setting(pg, "EVMPI_LOOP_HOLD_US"), "500");
  evmpi_pg_destroy(pg);
  // Ignored: the options' values, and a bad variable does not matter.
  setenv("EVMPI_LOOP_HOLD_US", "nonsense", 1);
  ASSERT_EQ(evmpi_pg_options_set_ignore_env(opts, true), EVMPI_OK);
  ASSERT_EQ(evmpi_pg_create_with(base, nullptr, 0, opts, &pg), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(Setting(pg, "EVMPI_PIECE"), "65536");
  EXPECT_EQ(Setting(pg, "EVMPI_TIMEOUT_MS"), "0");
  EXPECT_EQ(Setting(pg, "EVMPI_LOOP_HOLD_US"), "3000");
  evmpi_pg_destroy(pg);
  event_base_free(base);
}

TEST_F(Options, BadEnvironmentValuesFailCreationNamingTheVariable) {
  std::vector<std::vector<const char *>> bad = {
      {"EVMPI_TIMEOUT_MS", "-1", "is not a number of milliseconds in 0..2147483647"},
      {"EVMPI_TIMEOUT_MS", "5s", "is not a number of milliseconds in 0..2147483647"},
      {"EVMPI_PIECE", "24", "is not a power of two from 16 to 1073741824 bytes"},
      {"EVMPI_LOOP_P2P_POLL_US", "2000000", "is not a number of microseconds in 0..1000000"},
      {"EVMPI_LOOP_HOLD_US", "0", "is not a number of microseconds in 1..1000000"},
      {"EVMPI_EXIT_WAIT_MS", "x", "is not a number of milliseconds in 0..3600000"},
      {"EVMPI_COLL_FUSE_BYTES", "17M", "is not a number of bytes from 0 to 16777216"},
      {"EVMPI_COLL_FUSE_BYTES", "-1", "is not a number of bytes from 0 to 16777216"},
  };
  evmpi_setting_info_t info;
  ASSERT_EQ(evmpi_setting_info(6, &info), EVMPI_OK);
  ASSERT_STREQ(info.name, "EVMPI_CUDA_AWARE");
#ifdef EVMPI_TEST_HAVE_CUDA
  bad.push_back({"EVMPI_CUDA_AWARE", "yes", "is not auto, 0 or 1"});
  bad.push_back({"EVMPI_CUDA_STAGING", "2", "is not 0 or 1"});
  bad.push_back({"EVMPI_CUDA_CHUNK", "3M", "is not a power of two from 16 to 1073741824 bytes"});
#endif
  struct event_base *base = event_base_new();
  for (auto &b : bad) {
    setenv(b[0], b[1], 1);
    evmpi_pg_t *pg = nullptr;
    EXPECT_EQ(evmpi_pg_create_with(base, nullptr, 0, opts, &pg), EVMPI_ERR_INVALID) << b[0];
    EXPECT_EQ(pg, nullptr);
    std::string want = std::string("pg_create: ") + b[0] + "=" + b[1] + " " + b[2];
    EXPECT_TRUE(Contains(evmpi_last_error(), want)) << evmpi_last_error();
    // Through a communicator too, named by that function.
    EXPECT_EQ(evmpi_pg_create_from_comm_with(base, MPI_COMM_WORLD, opts, &pg), EVMPI_ERR_INVALID);
    EXPECT_TRUE(Contains(evmpi_last_error(), std::string("pg_create_from_comm: ") + b[0] + "="))
        << evmpi_last_error();
    unsetenv(b[0]);
  }
  // EVMPI_DEBUG keeps its old leniency: another value is off.
  setenv("EVMPI_DEBUG", "verbose", 1);
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create_with(base, nullptr, 0, opts, &pg), EVMPI_OK) << evmpi_last_error();
  EXPECT_EQ(Setting(pg, "EVMPI_DEBUG"), "off");
  evmpi_pg_destroy(pg);
  event_base_free(base);
}

// With EVMPI_DEBUG=detail from the options (the environment ignored),
// ranks that call different collectives get the mismatch as an error;
// a group of the same process without it runs the same calls unchecked
// (its allreduce and broadcast of one element meet in MPI by chance of
// their sizes, so they are not run: only that it is not refused).
TEST_F(Options, DebugDetailFromTheOptionsCatchesAMismatch) {
  if (evmpi_test_world_size() < 2)
    GTEST_SKIP() << "needs two ranks that call different collectives";
  ASSERT_EQ(evmpi_pg_options_set_debug(opts, EVMPI_DEBUG_DETAIL), EVMPI_OK);
  ASSERT_EQ(evmpi_pg_options_set_ignore_env(opts, true), EVMPI_OK);
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create_with(base, nullptr, 0, opts, &pg), EVMPI_OK) << evmpi_last_error();
  int32_t x = 1;
  evmpi_tensor_t t = evmpi_tensor_flat(&x, EVMPI_INT32, 1);
  evmpi_work_t *w = nullptr;
  if (evmpi_pg_rank(pg) == 0)
    ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK);
  else
    ASSERT_EQ(evmpi_broadcast(pg, &t, 0, &w), EVMPI_OK);
  ASSERT_TRUE(evmpi_test_run_until_done(base, &w, 1, EVMPI_TEST_TIMEOUT_MS));
  EXPECT_EQ(evmpi_work_status(w), EVMPI_ERR_INVALID);
  EXPECT_TRUE(Contains(evmpi_work_error(w), "mismatched collectives across ranks")) << evmpi_work_error(w);
  evmpi_work_release(w);
  evmpi_pg_destroy(pg);
  event_base_free(base);
}

TEST_F(Options, ABaseAndAnExternalLoopAreRefused) {
  ASSERT_EQ(evmpi_pg_options_set_loop(opts, EVMPI_LOOP_EXTERNAL), EVMPI_OK);
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  EXPECT_EQ(evmpi_pg_create_with(base, nullptr, 0, opts, &pg), EVMPI_ERR_INVALID);
  EXPECT_EQ(pg, nullptr);
  EXPECT_TRUE(Contains(evmpi_last_error(), "EVMPI_LOOP_EXTERNAL")) << evmpi_last_error();
  EXPECT_EQ(evmpi_pg_create_from_comm_with(base, MPI_COMM_WORLD, opts, &pg), EVMPI_ERR_INVALID);
  EXPECT_EQ(evmpi_pg_create_with(base, nullptr, 0, opts, nullptr), EVMPI_ERR_INVALID);
  event_base_free(base);
}

// doc/settings.md's table is the library's: one line per row, in order,
// generated by this very format (a failure prints the lines to paste).
TEST_F(Options, TheDocumentationListsTheTable) {
  std::ostringstream want;
  for (size_t i = 0; i < evmpi_settings_count(); i++) {
    evmpi_setting_info_t r;
    ASSERT_EQ(evmpi_setting_info(i, &r), EVMPI_OK);
    want << "| `" << r.name << "` | `" << r.setter << "` | "
         << (r.default_value[0] ? r.default_value : "none") << " | " << r.range << " | " << r.doc
         << (r.process_wide ? " Process-wide." : "")
         << (r.cuda_only ? " Read by builds with CUDA only." : "") << " |\n";
  }
  std::ifstream f(EVMPI_TEST_SRCDIR "/doc/settings.md");
  ASSERT_TRUE(f.good()) << "cannot read " EVMPI_TEST_SRCDIR "/doc/settings.md";
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  const std::string begin = "<!-- settings table: begin -->\n", end = "<!-- settings table: end -->";
  size_t b = text.find(begin), e = text.find(end);
  ASSERT_NE(b, std::string::npos);
  ASSERT_NE(e, std::string::npos);
  std::string got = text.substr(b + begin.size(), e - b - begin.size());
  std::string head = "| variable | setter | default | values | what it does |\n| --- | --- | --- | --- | --- |\n";
  EXPECT_EQ(got, head + want.str()) << "doc/settings.md should hold, between its markers:\n"
                                    << head << want.str();
}

} // namespace

int main(int argc, char **argv) {
  return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE);
}
