/* harness.c: loop helpers for the tests. */
#include "harness.h"

#include <event2/event.h>
#include <mpi.h>
#include <time.h>

double evmpi_test_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int64_t evmpi_test_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
}

bool evmpi_test_run_until(struct event_base *base, bool (*cond)(void *), void *arg,
                          int timeout_ms) {
  double deadline = evmpi_test_now_ms() + timeout_ms;
  /* A 10 ms tick bounds each turn, so the deadline is noticed even when
   * nothing else happens. */
  struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
  struct timeval tv = {0, 10000};
  event_add(tick, &tv);
  bool ok = cond(arg);
  while (!ok && evmpi_test_now_ms() < deadline) {
    event_base_loop(base, EVLOOP_ONCE);
    ok = cond(arg);
  }
  event_free(tick);
  return ok;
}

void evmpi_test_run_for(struct event_base *base, int ms) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  event_base_loopexit(base, &tv);
  event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
}

static bool flag_set(void *arg) { return *(const volatile int *)arg != 0; }

bool evmpi_test_run_until_flag(struct event_base *base, const volatile int *flag, int timeout_ms) {
  return evmpi_test_run_until(base, flag_set, (void *)flag, timeout_ms);
}

typedef struct {
  evmpi_work_t *const *works;
  int n;
} works_t;

static bool all_done(void *arg) {
  works_t *w = arg;
  for (int i = 0; i < w->n; i++)
    if (!evmpi_work_is_completed(w->works[i]))
      return false;
  return true;
}

static void wake(evmpi_work_t *work, void *arg) {
  (void)work;
  (void)arg;
}

bool evmpi_test_run_until_done(struct event_base *base, evmpi_work_t *const *works, int n,
                               int timeout_ms) {
  /* A callback on each work makes its completion wake the loop. */
  for (int i = 0; i < n; i++)
    evmpi_work_on_complete(works[i], wake, NULL);
  works_t w = {works, n};
  return evmpi_test_run_until(base, all_done, &w, timeout_ms);
}

int evmpi_test_world_rank(void) {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int evmpi_test_world_size(void) {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}
