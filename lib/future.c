/* future.c: futures, their callbacks, and joins of several futures.
 *
 * A future is marked done on whichever thread finishes its work (so that
 * blocking waits need no loop), and its callbacks are handed to the loop of
 * its group through the bridge, which runs them on the loop thread. */
#include "future-internal.h"
#include "fifo-internal.h"
#include "clock-internal.h"
#include "status-internal.h"
#include "work-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct evmpi_join_link {
  evmpi_join_link_t *next;
  evmpi_future_t *parent; /* a reference */
};

/* Whether f is done; its status, error and value are final then, and read
 * without its lock. */
static bool is_done(evmpi_future_t *f) {
  return atomic_load_explicit(&f->done, memory_order_acquire);
}

/* f is waited for or tested while not done: a collective of its group (or
 * of a join's children's groups) that a callback left for the loop thread
 * must not wait for that thread, which may be the one waiting. */
static void kick(evmpi_future_t *f) {
  if (f->sink && f->sink->kick)
    f->sink->kick(f->sink);
  for (size_t i = 0; i < f->nchildren; i++)
    kick(f->children[i]);
}

/* is_done for the public queries: a future that is not done is kicked. */
static bool is_done_kick(evmpi_future_t *f) {
  if (is_done(f))
    return true;
  kick(f);
  return false;
}

static void cont_free(evmpi_future_t *f, evmpi_cont_t *c) {
  if (c != &f->inline_cont)
    free(c);
}

void evmpi__future_sync_init(evmpi_future_t *f) {
  pthread_mutex_init(&f->mu, NULL);
  evmpi__cond_init_monotonic(&f->cv);
}

void evmpi__future_sync_destroy(evmpi_future_t *f) {
  pthread_mutex_destroy(&f->mu);
  pthread_cond_destroy(&f->cv);
}

static void standalone_last(evmpi_ref_t *ref) {
  evmpi_future_t *f = evmpi__container_of(ref, evmpi_future_t, own_ref);
  evmpi__future_cleanup(f);
  evmpi__future_sync_destroy(f);
  free(f);
}

void evmpi__future_reset(evmpi_future_t *f, evmpi_work_t *owner, evmpi_ref_t *owner_ref,
                         evmpi_future_sink_t *sink) {
  atomic_init(&f->pending, 0);
  f->owner = owner;
  if (owner_ref) {
    f->ref = owner_ref;
  } else {
    evmpi__ref_init(&f->own_ref, 1, standalone_last);
    f->ref = &f->own_ref;
  }
  f->sink = sink;
  /* A work's future lives inside the work, whose own reference on the
   * group keeps the sink alive: only a standalone future counts on it. */
  f->sink_ref = sink && !owner_ref;
  if (f->sink_ref)
    evmpi__ref_get(sink->ref);
  f->status = EVMPI_ERR_STATE;
}

/* A standalone future (a join), one reference, posting to sink's loop. */
static void future_init(evmpi_future_t *f, evmpi_future_sink_t *sink) {
  memset(f, 0, sizeof *f);
  evmpi__future_sync_init(f);
  evmpi__future_reset(f, NULL, NULL, sink);
}

void evmpi__future_cleanup(evmpi_future_t *f) {
  for (evmpi_cont_t *c = f->conts, *next; c; c = next) {
    next = c->next;
    cont_free(f, c);
  }
  for (evmpi_join_link_t *l = f->parents, *next; l; l = next) {
    next = l->next;
    evmpi_future_release(l->parent);
    free(l);
  }
  for (size_t i = 0; i < f->nchildren; i++)
    evmpi_future_release(f->children[i]);
  free(f->children);
  free(f->error);
  if (f->sink_ref)
    evmpi__ref_put(f->sink->ref);
}

void evmpi_future_retain(evmpi_future_t *f) {
  if (f)
    evmpi__ref_get(f->ref);
}

void evmpi_future_release(evmpi_future_t *f) {
  if (f)
    evmpi__ref_put(f->ref);
}

/* Hands f's callbacks to its loop. A join whose first group is gone goes
 * to the loop of another group among its children's, so that its
 * callbacks still run on a loop thread and not on the library thread that
 * completed the last child. Only when every one of those groups is gone
 * (their destroy completed f) do they run here, on the destroying thread. */
static void schedule(evmpi_future_t *f, bool ref_given) {
  if (!ref_given)
    evmpi_future_retain(f);
  if (f->sink && f->sink->post(f->sink, f))
    return;
  for (size_t i = 0; i < f->nchildren; i++) {
    evmpi_future_sink_t *sink = f->children[i]->sink;
    if (sink && sink != f->sink && sink->post(sink, f))
      return;
  }
  evmpi__future_deliver(f);
}

static void join_child_done(evmpi_future_t *join);

void evmpi__future_batch_post(evmpi_future_batch_t *batch) {
  evmpi_future_t *newest = batch->newest, *oldest = batch->oldest;
  evmpi_future_sink_t *sink = batch->sink;
  *batch = (evmpi_future_batch_t){0};
  if (!newest || sink->post_list(sink, newest, oldest))
    return;
  /* The loop is gone: each goes its own way (schedule), oldest first. */
  evmpi_future_t *fifo = evmpi__future_list_reverse(newest);
  while (fifo) {
    evmpi_future_t *next = fifo->next_delivery;
    fifo->next_delivery = NULL;
    schedule(fifo, true);
    fifo = next;
  }
}

/* Adds f (with the reference given for its delivery) to batch. */
static void batch_add(evmpi_future_batch_t *batch, evmpi_future_t *f) {
  if (batch->newest && batch->sink != f->sink)
    evmpi__future_batch_post(batch);
  batch->sink = f->sink;
  f->next_delivery = batch->newest;
  batch->newest = f;
  if (!batch->oldest)
    batch->oldest = f;
}

/* With release, one of the caller's references on f goes too: to the
 * delivery when f's callbacks are scheduled (no count taken and dropped
 * again on the way), else here. With batch (release only), a future with
 * a sink that takes lists is added to it instead of posted. */
static void complete(evmpi_future_t *f, int status, const char *error,
                     const evmpi_tensor_t *value, size_t nvalue, bool release,
                     evmpi_future_batch_t *batch) {
  char *copy = NULL;
  if (status != EVMPI_OK)
    copy = strdup(error ? error : evmpi_strerror(status));
  pthread_mutex_lock(&f->mu);
  if (atomic_load_explicit(&f->done, memory_order_relaxed)) {
    pthread_mutex_unlock(&f->mu);
    free(copy);
    if (release)
      evmpi_future_release(f);
    return;
  }
  f->status = status;
  f->error = copy;
  f->value = status == EVMPI_OK ? value : NULL;
  f->nvalue = status == EVMPI_OK ? nvalue : 0;
  /* After the result: whoever sees done (acquire) reads it without mu. */
  atomic_store_explicit(&f->done, true, memory_order_release);
  evmpi_join_link_t *parents = f->parents;
  f->parents = NULL;
  bool post = f->conts && !f->queued;
  if (post)
    f->queued = true;
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);

  for (evmpi_join_link_t *l = parents, *next; l; l = next) {
    next = l->next;
    join_child_done(l->parent);
    evmpi_future_release(l->parent);
    free(l);
  }
  if (post && batch && f->sink && f->sink->post_list)
    batch_add(batch, f);
  else if (post)
    schedule(f, release);
  else if (release)
    evmpi_future_release(f);
}

void evmpi__future_complete(evmpi_future_t *f, int status, const char *error,
                            const evmpi_tensor_t *value, size_t nvalue) {
  complete(f, status, error, value, nvalue, false, NULL);
}

void evmpi__future_complete_release_batch(evmpi_future_t *f, int status, const char *error,
                                          const evmpi_tensor_t *value, size_t nvalue,
                                          evmpi_future_batch_t *batch) {
  complete(f, status, error, value, nvalue, true, batch);
}

void evmpi__future_complete_release(evmpi_future_t *f, int status, const char *error,
                                    const evmpi_tensor_t *value, size_t nvalue) {
  complete(f, status, error, value, nvalue, true, NULL);
}

void evmpi__future_deliver(evmpi_future_t *f) {
  pthread_mutex_lock(&f->mu);
  evmpi_cont_t *c = f->conts;
  f->conts = f->conts_tail = NULL;
  f->queued = false;
  pthread_mutex_unlock(&f->mu);
  while (c) {
    evmpi_cont_t *next = c->next;
    if (c->for_work)
      c->fn.work(f->owner, c->arg);
    else
      c->fn.future(f, c->arg);
    cont_free(f, c);
    c = next;
  }
  evmpi_future_release(f);
}

/* Appends a callback (in f's inline slot while that is free, else in a
 * malloc'ed one); schedules delivery when f is already done. */
static int add_cont(evmpi_future_t *f, const evmpi_cont_t *tmpl, const char *opname) {
  evmpi_cont_t *c = NULL;
  pthread_mutex_lock(&f->mu);
  if (!f->inline_cont_taken) {
    f->inline_cont_taken = true;
    c = &f->inline_cont;
  } else {
    pthread_mutex_unlock(&f->mu);
    c = malloc(sizeof *c);
    if (!c)
      return evmpi__fail(EVMPI_ERR_NOMEM, "%s: out of memory", opname);
    pthread_mutex_lock(&f->mu);
  }
  *c = *tmpl;
  EVMPI__FIFO_PUSH(f->conts, f->conts_tail, c);
  bool post = atomic_load_explicit(&f->done, memory_order_relaxed) && !f->queued;
  if (post)
    f->queued = true;
  pthread_mutex_unlock(&f->mu);
  if (post)
    schedule(f, false);
  return EVMPI_OK;
}

int evmpi_future_then(evmpi_future_t *f, evmpi_future_cb cb, void *arg) {
  if (!f || !cb)
    return evmpi__fail(EVMPI_ERR_INVALID, "future_then: %s is NULL", f ? "cb" : "future");
  evmpi_cont_t c = {.fn.future = cb, .arg = arg};
  return add_cont(f, &c, "future_then");
}

int evmpi_work_on_complete(evmpi_work_t *w, evmpi_work_cb cb, void *arg) {
  if (!w || !cb)
    return evmpi__fail(EVMPI_ERR_INVALID, "work_on_complete: %s is NULL", w ? "cb" : "work");
  evmpi_cont_t c = {.for_work = true, .fn.work = cb, .arg = arg};
  return add_cont(&w->future, &c, "work_on_complete");
}

int evmpi_future_wait(evmpi_future_t *f, int timeout_ms) {
  if (!f)
    return evmpi__fail(EVMPI_ERR_INVALID, "wait: future is NULL");
  struct timespec deadline = {0, 0};
  if (timeout_ms > 0)
    deadline = evmpi__timespec_after(CLOCK_MONOTONIC, (int64_t)timeout_ms * 1000000);
  if (is_done_kick(f))
    return f->status;
  pthread_mutex_lock(&f->mu);
  while (!atomic_load_explicit(&f->done, memory_order_relaxed) && timeout_ms != 0) {
    if (timeout_ms < 0) {
      pthread_cond_wait(&f->cv, &f->mu);
    } else if (pthread_cond_timedwait(&f->cv, &f->mu, &deadline) == ETIMEDOUT) {
      break;
    }
  }
  int rc = atomic_load_explicit(&f->done, memory_order_relaxed) ? f->status : EVMPI_ERR_TIMEOUT;
  pthread_mutex_unlock(&f->mu);
  return rc;
}

int evmpi_future_status(evmpi_future_t *f) {
  if (!f)
    return EVMPI_ERR_INVALID;
  return is_done_kick(f) ? f->status : EVMPI_ERR_STATE;
}

bool evmpi_future_is_done(evmpi_future_t *f) {
  if (!f)
    return false;
  return is_done_kick(f);
}

size_t evmpi_future_value(evmpi_future_t *f, const evmpi_tensor_t **tensors) {
  size_t n = 0;
  const evmpi_tensor_t *v = NULL;
  if (f && is_done(f) && f->status == EVMPI_OK) {
    v = f->value;
    n = f->nvalue;
  }
  if (tensors)
    *tensors = n ? v : NULL;
  return n;
}

const char *evmpi_future_error(evmpi_future_t *f) {
  if (!f)
    return NULL;
  return is_done(f) && f->status != EVMPI_OK ? f->error : NULL;
}

/* The last child of a join is done: the join takes the first failure. */
static void join_child_done(evmpi_future_t *join) {
  if (atomic_fetch_sub_explicit(&join->pending, 1, memory_order_acq_rel) != 1)
    return;
  int status = EVMPI_OK;
  const char *error = NULL;
  for (size_t i = 0; i < join->nchildren; i++) {
    evmpi_future_t *c = join->children[i];
    pthread_mutex_lock(&c->mu);
    int s = c->status;
    const char *e = c->error;
    pthread_mutex_unlock(&c->mu);
    if (s != EVMPI_OK) { /* c is done: its status and error are final */
      status = s;
      error = e;
      break;
    }
  }
  evmpi__future_complete(join, status, error, NULL, 0);
}

int evmpi_future_all(evmpi_future_t *const *futures, size_t count, evmpi_future_t **all) {
  if (!all)
    return evmpi__fail(EVMPI_ERR_INVALID, "future_all: all is NULL");
  *all = NULL;
  if (count > 0 && !futures)
    return evmpi__fail(EVMPI_ERR_INVALID, "future_all: futures is NULL with count %zu", count);
  for (size_t i = 0; i < count; i++)
    if (!futures[i])
      return evmpi__fail(EVMPI_ERR_INVALID, "future_all: futures[%zu] is NULL", i);
  evmpi_future_t *j = malloc(sizeof *j);
  evmpi_future_t **children = count ? calloc(count, sizeof *children) : NULL;
  evmpi_join_link_t **links = count ? calloc(count, sizeof *links) : NULL;
  bool nomem = !j || (count && (!children || !links));
  for (size_t i = 0; !nomem && i < count; i++)
    nomem = !(links[i] = malloc(sizeof **links));
  if (nomem) {
    for (size_t i = 0; links && i < count; i++)
      free(links[i]);
    free(links);
    free(children);
    free(j);
    return evmpi__fail(EVMPI_ERR_NOMEM, "future_all: out of memory");
  }
  future_init(j, count ? futures[0]->sink : NULL);
  j->children = children;
  j->nchildren = count;
  /* One extra count keeps the join open while children are linked. */
  atomic_store(&j->pending, count + 1);
  for (size_t i = 0; i < count; i++) {
    evmpi_future_t *c = futures[i];
    evmpi_future_retain(c);
    children[i] = c;
    pthread_mutex_lock(&c->mu);
    bool done = c->done;
    if (!done) {
      evmpi_future_retain(j);
      links[i]->parent = j;
      links[i]->next = c->parents;
      c->parents = links[i];
      links[i] = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (done)
      join_child_done(j);
    free(links[i]);
  }
  free(links);
  join_child_done(j);
  *all = j;
  return EVMPI_OK;
}
