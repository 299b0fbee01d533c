/* harness.h: the C test harness. An MPI-aware GoogleTest main (every rank
 * runs every test; a failure on any rank fails the test on all ranks; rank
 * 0 prints the report) and helpers that run an event_base until a
 * condition holds or a deadline passes. */
#ifndef EVMPI_TEST_HARNESS_H
#define EVMPI_TEST_HARNESS_H

#include <stdbool.h>

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
/* Milliseconds on a monotonic clock. */
double evmpi_test_now_ms(void);

/* The default time budget of one wait in a test. */
#define EVMPI_TEST_TIMEOUT_MS 30000

#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
#include <gtest/gtest.h>
/* Runs the tests with the MPI-aware listeners; returns the exit status
 * agreed by every rank. */
int evmpi_test_main(int argc, char **argv, evmpi_test_mpi_mode_t mode);

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
#endif

#endif
