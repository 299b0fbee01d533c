/* harness.h: the C test harness. An MPI-aware GoogleTest main (every rank
 * runs every test; a failure on any rank fails the test on all ranks; rank
 * 0 prints the report) and helpers that run an event_base until a
 * condition holds or a deadline passes. */
#ifndef EVMPI_TEST_HARNESS_H
#define EVMPI_TEST_HARNESS_H

#include <stdbool.h>
#include <stdint.h>

#include "evmpi.h"

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;

/* How the test program's main sets MPI up before the tests run. */
typedef enum {
  EVMPI_TEST_MPI_INIT_MULTIPLE, /* MPI_Init_thread(MPI_THREAD_MULTIPLE) */
  EVMPI_TEST_MPI_INIT_SERIALIZED, /* MPI_Init_thread(MPI_THREAD_SERIALIZED) */
  EVMPI_TEST_MPI_LEAVE_TO_EVMPI, /* no MPI call before the first test */
} evmpi_test_mpi_mode_t;

/* Runs base until cond(arg) is true (checked after every loop turn) or
 * timeout_ms passes. Returns true when cond held. */
bool evmpi_test_run_until(struct event_base *base, bool (*cond)(void *), void *arg,
                          int timeout_ms);
/* Runs base for ms milliseconds. */
void evmpi_test_run_for(struct event_base *base, int ms);
/* Runs base until *flag is non-zero or timeout_ms passes. */
bool evmpi_test_run_until_flag(struct event_base *base, const volatile int *flag, int timeout_ms);
/* Runs base until every work in works is completed, or timeout_ms passes.
 * Registers a no-op callback on each, so that completions wake the loop. */
bool evmpi_test_run_until_done(struct event_base *base, evmpi_work_t *const *works, int n,
                               int timeout_ms);

int evmpi_test_world_rank(void);
int evmpi_test_world_size(void);
/* Milliseconds on a monotonic clock (CLOCK_MONOTONIC: the ranks of one
 * host share it). */
double evmpi_test_now_ms(void);
/* The same clock in nanoseconds. */
int64_t evmpi_test_now_ns(void);

/* The default time budget of one wait in a test. */
#define EVMPI_TEST_TIMEOUT_MS 30000

/* 1 in a ThreadSanitizer build: its instrumentation makes every wake-up
 * of a library thread several times dearer in CPU, which the tests that
 * bound a waiting thread's CPU allow for. */
#if defined(__SANITIZE_THREAD__)
#define EVMPI_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EVMPI_TEST_TSAN 1
#endif
#endif
#ifndef EVMPI_TEST_TSAN
#define EVMPI_TEST_TSAN 0
#endif

#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
#include <gtest/gtest.h>

#include <vector>
/* Runs the tests with the MPI-aware listeners; returns the exit status
 * agreed by every rank. */
int evmpi_test_main(int argc, char **argv, evmpi_test_mpi_mode_t mode);

/* Runs base until every work in works has completed (EVMPI_TEST_TIMEOUT_MS
 * at most), expects each to have succeeded and releases them. Returns
 * false, with a failure reported and nothing released, when some did not
 * complete. */
bool evmpi_test_finish(struct event_base *base, evmpi_work_t *const *works, int n);

/* Checks pg, a group of the world ranks in ranks of which this rank is
 * ranks[index]: its rank and size, and an allreduce (sum, run on base)
 * of the members' world ranks. */
void evmpi_test_check_subgroup(struct event_base *base, evmpi_pg_t *pg,
                               const std::vector<int> &ranks, int index);

/* When a work's callback ran, for tests that time a delivery: pass
 * evmpi_test_stamp_cb with one of these as its argument; it records the
 * time (evmpi_test_now_ns) in seen and the work's status, sets done and
 * releases the work. stamp is the test's own: when a peer sent or posted,
 * on the same clock. */
struct StampedCompletion {
  int64_t stamp = 0, seen = 0;
  bool done = false;
  int status = -1;
};
void evmpi_test_stamp_cb(evmpi_work_t *w, void *arg);

/* An event_base with a group over the world on it, for one test. */
struct TestLoop {
  struct event_base *base;
  evmpi_pg_t *pg = nullptr;
  TestLoop();
  ~TestLoop();
};

/* Every test's fixture: after each test the ranks agree on its outcome, so a
 * failure on one rank fails it on all of them. */
class MpiTest : public ::testing::Test {
protected:
  void TearDown() override;
};

/* The fixture of the tests of the loop-agnostic core and of its adapters:
 * pg, a group over the world for a loop of the test's own
 * (EVMPI_LOOP_EXTERNAL). A subclass that sets its loop up before the
 * group calls ExternalLoopTest::SetUp after it, and one that must see the
 * group gone before its loop is torn down calls DestroyGroup first. */
class ExternalLoopTest : public MpiTest {
protected:
  void SetUp() override;
  void TearDown() override; /* DestroyGroup, then MpiTest's */
  /* Destroys pg unless the test did (and set it to nullptr). */
  void DestroyGroup();
  /* Submits an allreduce of 1 from every rank whose callback, run by the
   * test's loop, counts itself in cb_ran, sets cb_sum_ok when the sum is
   * the world size and destroys the group from inside the callback; pg is
   * nullptr from here on. Returns the work for the test to release, or
   * nullptr after a failed submission (pg is then left as it was). */
  evmpi_work_t *AllreduceThatDestroys();
  /* Submits a barrier whose callback counts itself in cb_ran. Returns the
   * work for the test to release, or nullptr after a failure. */
  evmpi_work_t *CountedBarrier();

  evmpi_pg_t *pg = nullptr;
  int cb_ran = 0;
  bool cb_sum_ok = false;
  /* What the callbacks use: members, so that they are still alive when a
   * failed assertion leaves the delivery to TearDown's destroy. */
  int32_t cb_x = 1;
  evmpi_pg_t *cb_pg = nullptr;
};
#endif

#endif
