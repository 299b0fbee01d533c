/*
 * clock-internal.h: the monotonic clock and condition variables that wait on
 * it (header only). Private to lib/; names with a double underscore are
 * hidden from the shared library.
 */
#ifndef EVMPI_CLOCK_INTERNAL_H
#define EVMPI_CLOCK_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#include <pthread.h>
#include <time.h>

#include <time.h>
static inline int64_t evmpi__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
/* Makes cv wait on CLOCK_MONOTONIC, whose deadlines (evmpi__now_ns and
 * evmpi__timespec_after) a step of the wall clock cannot move. */
static inline void evmpi__cond_init_monotonic(pthread_cond_t *cv) {
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &attr);
  pthread_condattr_destroy(&attr);
}
/* The time ns nanoseconds from now on clock, as pthread_cond_timedwait
 * takes it (the clock its condition variable was made with). */
static inline struct timespec evmpi__timespec_after(clockid_t clock, int64_t ns) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  ts.tv_sec += (time_t)(ns / 1000000000);
  ts.tv_nsec += (long)(ns % 1000000000);
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

#endif /* EVMPI_CLOCK_INTERNAL_H */
