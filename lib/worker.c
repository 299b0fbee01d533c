/* worker.c: the worker thread. It runs a group's collectives one at a time,
 * in submission order, with blocking MPI calls (the fastest path in Open
 * MPI, where the nonblocking collectives are up to 2x slower). It sleeps on
 * a condition variable when there is nothing to run. */
#include "evmpi-internal.h"

#include <stdio.h>
#include <string.h>

static void *worker_main(void *arg) {
  evmpi_pg_t *pg = arg;
  evmpi_worker_t *wk = &pg->worker;
  for (;;) {
    pthread_mutex_lock(&wk->mu);
    while (!wk->head && !wk->closing)
      pthread_cond_wait(&wk->cv, &wk->mu);
    evmpi_work_t *w = wk->head;
    if (!w) {
      pthread_mutex_unlock(&wk->mu);
      break;
    }
    wk->head = w->next;
    if (!wk->head)
      wk->tail = NULL;
    w->next = NULL;
    w->state = EVMPI_WORK_RUNNING;
    pthread_mutex_unlock(&wk->mu);

    int status = w->run(w);
    evmpi__work_finish(w, status, NULL);
  }
  return NULL;
}

int evmpi__worker_start(evmpi_worker_t *wk, evmpi_pg_t *pg) {
  memset(wk, 0, sizeof *wk);
  pthread_mutex_init(&wk->mu, NULL);
  pthread_cond_init(&wk->cv, NULL);
  if (pthread_create(&wk->thread, NULL, worker_main, pg) != 0)
    return evmpi__fail(EVMPI_ERR_NOMEM, "pg_create: cannot start the worker thread");
  wk->started = true;
  return EVMPI_OK;
}

int evmpi__worker_submit(evmpi_worker_t *wk, evmpi_work_t *w) {
  pthread_mutex_lock(&wk->mu);
  if (wk->closing) {
    pthread_mutex_unlock(&wk->mu);
    return evmpi__fail(EVMPI_ERR_ABORTED, "%s: the group is being destroyed", w->opname);
  }
  w->state = EVMPI_WORK_QUEUED;
  w->next = NULL;
  bool wake = !wk->head;
  if (wk->tail)
    wk->tail->next = w;
  else
    wk->head = w;
  wk->tail = w;
  if (wake)
    pthread_cond_signal(&wk->cv);
  pthread_mutex_unlock(&wk->mu);
  return EVMPI_OK;
}

bool evmpi__worker_cancel(evmpi_worker_t *wk, evmpi_work_t *w) {
  bool removed = false;
  pthread_mutex_lock(&wk->mu);
  if (w->state == EVMPI_WORK_QUEUED) {
    evmpi_work_t *prev = NULL;
    for (evmpi_work_t *it = wk->head; it; prev = it, it = it->next) {
      if (it != w)
        continue;
      if (prev)
        prev->next = w->next;
      else
        wk->head = w->next;
      if (wk->tail == w)
        wk->tail = prev;
      w->next = NULL;
      w->state = EVMPI_WORK_DONE;
      removed = true;
      break;
    }
  }
  pthread_mutex_unlock(&wk->mu);
  if (removed) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s: aborted before it started (#%llu)", w->opname,
             (unsigned long long)w->seq);
    evmpi__work_finish(w, EVMPI_ERR_ABORTED, msg);
  }
  return removed;
}

void evmpi__worker_fail_queued(evmpi_worker_t *wk, const char *why) {
  pthread_mutex_lock(&wk->mu);
  wk->closing = true;
  evmpi_work_t *w = wk->head;
  wk->head = wk->tail = NULL;
  for (evmpi_work_t *it = w; it; it = it->next)
    it->state = EVMPI_WORK_DONE;
  pthread_mutex_unlock(&wk->mu);
  while (w) {
    evmpi_work_t *next = w->next;
    evmpi__work_finish(w, EVMPI_ERR_ABORTED, why);
    w = next;
  }
}

void evmpi__worker_drain_and_stop(evmpi_worker_t *wk) {
  if (!wk->started)
    return;
  pthread_mutex_lock(&wk->mu);
  wk->closing = true;
  pthread_cond_signal(&wk->cv);
  pthread_mutex_unlock(&wk->mu);
  pthread_join(wk->thread, NULL);
  wk->started = false;
}
