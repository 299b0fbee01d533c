/* groups.c: the process's live groups. Every group is registered from its
 * creation until its teardown has finished, so that MPI_Finalize (the
 * application's, or evmpi's own at exit) first stops every group still
 * alive and waits for the teardowns still running: no library thread calls
 * MPI after MPI_Finalize, and no communicator is freed after it. */
#include "groups-internal.h"
#include "clock-internal.h"
#include "pg-internal.h"
#include "poller-internal.h"
#include "status-internal.h"
#include "worker-internal.h"

#include <errno.h>
#include <stdlib.h>

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reg_cv; /* CLOCK_MONOTONIC, made once */
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;
static evmpi_pg_t *reg_head; /* under reg_mu, linked through reg_next */

static void reg_init(void) {
  evmpi__cond_init_monotonic(&reg_cv);
}

void evmpi__groups_add(evmpi_pg_t *pg) {
  pthread_once(&reg_once, reg_init);
  pthread_mutex_lock(&reg_mu);
  pg->reg_prev = NULL;
  pg->reg_next = reg_head;
  if (reg_head)
    reg_head->reg_prev = pg;
  reg_head = pg;
  pg->registered = true;
  pthread_mutex_unlock(&reg_mu);
}

void evmpi__groups_remove(evmpi_pg_t *pg) {
  pthread_once(&reg_once, reg_init);
  pthread_mutex_lock(&reg_mu);
  if (pg->registered) {
    if (pg->reg_prev)
      pg->reg_prev->reg_next = pg->reg_next;
    else
      reg_head = pg->reg_next;
    if (pg->reg_next)
      pg->reg_next->reg_prev = pg->reg_prev;
    pg->reg_prev = pg->reg_next = NULL;
    pg->registered = false;
  }
  pthread_cond_broadcast(&reg_cv);
  pthread_mutex_unlock(&reg_mu);
}

static bool step(evmpi_pg_t *pg, int from, int to) {
  return atomic_compare_exchange_strong(&pg->phase, &from, to);
}

bool evmpi__groups_claim(evmpi_pg_t *pg) { return step(pg, EVMPI_PG_LIVE, EVMPI_PG_DEFERRED); }

bool evmpi__groups_begin_teardown(evmpi_pg_t *pg) {
  pg->teardown_thread = pthread_self();
  return step(pg, EVMPI_PG_DEFERRED, EVMPI_PG_RUNNING);
}

/* Whether a registered group's destroy has begun and its teardown not yet
 * ended (under reg_mu), not counting one that runs on the calling thread
 * (a callback that its teardown delivers and that finalises MPI). Groups
 * stopped at finalize stay registered, done. */
static bool teardown_running_locked(void) {
  for (evmpi_pg_t *pg = reg_head; pg; pg = pg->reg_next) {
    int phase = atomic_load(&pg->phase);
    if (phase == EVMPI_PG_DEFERRED ||
        (phase == EVMPI_PG_RUNNING && !pthread_equal(pg->teardown_thread, pthread_self())))
      return true;
  }
  return false;
}

static bool wait_teardowns(int64_t deadline_ns) {
  pthread_once(&reg_once, reg_init);
  struct timespec ts = {deadline_ns / 1000000000, deadline_ns % 1000000000};
  pthread_mutex_lock(&reg_mu);
  bool busy;
  while ((busy = teardown_running_locked()))
    if (pthread_cond_timedwait(&reg_cv, &reg_mu, &ts) == ETIMEDOUT) {
      busy = teardown_running_locked();
      break;
    }
  pthread_mutex_unlock(&reg_mu);
  return !busy;
}

bool evmpi__groups_stop_all(int wait_ms, void (*stop)(evmpi_pg_t *pg, int64_t deadline_ns)) {
  pthread_once(&reg_once, reg_init);
  int64_t deadline = evmpi__now_ns() + (int64_t)wait_ms * 1000000;
  for (;;) {
    /* One group at a time: stopping it takes time, and the teardowns of
     * others take reg_mu to leave the registry meanwhile. A group whose
     * destroy is deferred to a batch that may never end (the callback is
     * the one finalising MPI) is stopped like a live one. */
    evmpi_pg_t *victim = NULL;
    pthread_mutex_lock(&reg_mu);
    for (evmpi_pg_t *pg = reg_head; pg && !victim; pg = pg->reg_next)
      if (step(pg, EVMPI_PG_LIVE, EVMPI_PG_STOPPED) ||
          step(pg, EVMPI_PG_DEFERRED, EVMPI_PG_STOPPED))
        victim = pg;
    if (victim)
      evmpi__pg_retain(victim);
    pthread_mutex_unlock(&reg_mu);
    if (!victim)
      break;
    stop(victim, deadline);
    pthread_mutex_lock(&reg_mu);
    pthread_cond_broadcast(&reg_cv);
    pthread_mutex_unlock(&reg_mu);
    evmpi__pg_release(victim);
  }
  /* Teardowns already under way finish before MPI goes. */
  return wait_teardowns(deadline);
}

int evmpi_pg_wait_destroyed(int timeout_ms) {
  if (timeout_ms < 0)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_wait_destroyed: timeout_ms %d is negative",
                       timeout_ms);
  if (!wait_teardowns(evmpi__now_ns() + (int64_t)timeout_ms * 1000000))
    return evmpi__fail(EVMPI_ERR_TIMEOUT, "pg_wait_destroyed: a group's teardown was still "
                       "running after %d ms", timeout_ms);
  return EVMPI_OK;
}

bool evmpi__groups_any_broken(void) {
  /* A missed p2p deadline is remembered for the process (poller.c): the
   * group may be gone, its request to the dead peer is still in MPI. */
  if (evmpi__p2p_broken_any())
    return true;
  pthread_once(&reg_once, reg_init);
  bool broken = false;
  char why[8];
  pthread_mutex_lock(&reg_mu);
  for (evmpi_pg_t *pg = reg_head; pg && !broken; pg = pg->reg_next)
    broken = evmpi__worker_broken(&pg->worker, why, sizeof why);
  pthread_mutex_unlock(&reg_mu);
  return broken;
}
