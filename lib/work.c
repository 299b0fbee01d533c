/* work.c: the work object: one submitted operation, reference counted, with
 * its embedded future. */
#include "work-internal.h"
#include "tls-internal.h"
#include "clock-internal.h"
#include "future-internal.h"
#include "pg-internal.h"
#include "status-internal.h"
#include "timeline-internal.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A free list of works with at most one tensor slot (every operation but
 * the list collectives), shared by the whole process. A burst of queued
 * small collectives allocates and frees one work per operation; with
 * thousands in flight glibc's small per-thread cache is soon empty and
 * calloc/free go through its bins, a large part of a small operation's
 * cost. Kept works keep no reference to their group. The list
 * keeps up to WORK_POOL_MAX works (about 10 MiB), the most that were in
 * flight at once, as Open MPI's own free lists do; it is freed at exit.
 * Under AddressSanitizer the pool is off, so that a use after free of a
 * work is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define WORK_POOL_MAX 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WORK_POOL_MAX 0
#endif
#endif
#ifndef WORK_POOL_MAX
#define WORK_POOL_MAX 16384
#endif

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static evmpi_work_t *pool_head; /* under pool_mu, linked through next */
static size_t pool_len;         /* under pool_mu */
static atomic_bool pool_closed; /* set under pool_mu by exit's cleanup; read by the
                                   per-thread caches without it */

/* In front of the shared pool, each thread keeps up to CACHE_MAX works of
 * its own: a stream of sends and receives is submitted and released on
 * one thread (the loop thread, in its callbacks), and the pool's lock per
 * get and per put was a measurable part of a small message's cost. A
 * thread's cache goes to the pool when the thread exits (the key's
 * destructor) or, for the thread that exits the process, at the pool's
 * cleanup. The cache takes from and gives to the pool CACHE_BATCH works
 * at a time. */
enum { CACHE_MAX = 64, CACHE_BATCH = CACHE_MAX / 2 };
typedef struct {
  evmpi_work_t *head;
  size_t len;
} cache_t;
static EVMPI__HOT_TLS cache_t cache;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static bool cache_keyed; /* set once by cache_once */

static void work_destroy(evmpi_work_t *w) {
  evmpi__future_sync_destroy(&w->future);
  free(w);
}

/* Pushes w onto the shared pool (under pool_mu); false when it is full
 * or closed (the caller frees w). */
static bool pool_push_locked(evmpi_work_t *w) {
  size_t max = WORK_POOL_MAX; /* a variable: 0 < 0 would warn under ASan */
  if (pool_len >= max || atomic_load_explicit(&pool_closed, memory_order_relaxed))
    return false;
  w->next = pool_head;
  pool_head = w;
  pool_len++;
  return true;
}

static EVMPI__HOT_TLS bool cache_registered; /* this thread's key is set */

/* Moves up to max works off the front of *list to the pool (under
 * pool_mu); those that do not fit, or come after the cleanup, go onto
 * *spill for the caller to free outside the lock. Returns how many left
 * *list. */
static size_t pool_take_locked(evmpi_work_t **list, size_t max, evmpi_work_t **spill) {
  size_t n = 0;
  for (; n < max && *list; n++) {
    evmpi_work_t *w = *list;
    *list = w->next;
    if (!pool_push_locked(w)) {
      w->next = *spill;
      *spill = w;
    }
  }
  return n;
}

static void destroy_list(evmpi_work_t *w) {
  while (w) {
    evmpi_work_t *next = w->next;
    work_destroy(w);
    w = next;
  }
}

/* Moves the calling thread's cache to the pool under one lock. */
static void cache_flush(void *unused) {
  (void)unused;
  evmpi_work_t *w = cache.head, *spill = NULL;
  cache.head = NULL;
  cache.len = 0;
  cache_registered = false; /* the key's value is gone once its destructor runs */
  pthread_mutex_lock(&pool_mu);
  pool_take_locked(&w, SIZE_MAX, &spill);
  pthread_mutex_unlock(&pool_mu);
  destroy_list(spill);
}

static void cache_make_key(void) { cache_keyed = pthread_key_create(&cache_key, cache_flush) == 0; }

/* Whether this thread may cache: once its key is set, its exit flushes. */
static bool cache_usable(void) {
  if (cache_registered)
    return true;
  pthread_once(&cache_once, cache_make_key);
  cache_registered = cache_keyed && pthread_setspecific(cache_key, &cache) == 0;
  return cache_registered;
}

/* Refills the calling thread's empty cache with up to CACHE_BATCH works
 * from the pool under one lock, and returns one of them (NULL when the
 * pool is empty too). One lock per batch, not per work: a stream with more
 * works in flight than the cache holds took the lock on every get. */
static evmpi_work_t *cache_refill(void) {
  size_t want = cache_usable() ? CACHE_BATCH : 1;
  size_t n = 0;
  pthread_mutex_lock(&pool_mu);
  evmpi_work_t *first = pool_head, *last = NULL;
  for (evmpi_work_t *w = pool_head; w && n < want; w = w->next, n++)
    last = w;
  if (last) {
    pool_head = last->next;
    pool_len -= n;
    last->next = NULL;
  }
  pthread_mutex_unlock(&pool_mu);
  if (!last)
    return NULL;
  cache.head = first->next;
  cache.len = n - 1;
  return first;
}

static evmpi_work_t *pool_get(void) {
  evmpi_work_t *w = cache.head;
  if (w) {
    cache.head = w->next;
    cache.len--;
  } else {
    w = cache_refill();
  }
  if (w) {
    /* All zero but the future's mutex and condition variable (adjacent),
     * which stay made while the work is pooled: making and unmaking them
     * per operation was a measurable part of a queued one's cost. */
    size_t keep_from = offsetof(evmpi_work_t, future) + offsetof(evmpi_future_t, mu);
    size_t keep_to = offsetof(evmpi_work_t, future) + offsetof(evmpi_future_t, cv) +
                     sizeof(pthread_cond_t);
    memset(w, 0, keep_from);
    memset((char *)w + keep_to, 0, sizeof *w - keep_to);
  }
  return w;
}

/* Moves CACHE_BATCH works of the calling thread's full cache to the pool
 * under one lock. */
static void cache_spill(void) {
  evmpi_work_t *spill = NULL;
  pthread_mutex_lock(&pool_mu);
  cache.len -= pool_take_locked(&cache.head, CACHE_BATCH, &spill);
  pthread_mutex_unlock(&pool_mu);
  destroy_list(spill);
}

/* Keeps w for reuse; false when the pool is full (the caller frees it). */
static bool pool_put(evmpi_work_t *w) {
  size_t max = WORK_POOL_MAX; /* a variable: 0 < 0 would warn under ASan */
  if (max > 0 && !atomic_load_explicit(&pool_closed, memory_order_relaxed) && cache_usable()) {
    if (cache.len >= CACHE_MAX)
      cache_spill();
    w->next = cache.head;
    cache.head = w;
    cache.len++;
    return true;
  }
  pthread_mutex_lock(&pool_mu);
  bool kept = pool_push_locked(w);
  pthread_mutex_unlock(&pool_mu);
  return kept;
}

/* Frees the pool at exit, so that leak checkers see nothing of it. A work
 * released later (a detached worker's) is then freed at once. */
__attribute__((destructor)) static void pool_cleanup(void) {
  cache_flush(NULL);
  pthread_mutex_lock(&pool_mu);
  evmpi_work_t *w = pool_head;
  pool_head = NULL;
  pool_len = 0;
  atomic_store_explicit(&pool_closed, true, memory_order_relaxed);
  pthread_mutex_unlock(&pool_mu);
  destroy_list(w);
}

static void work_last(evmpi_ref_t *ref);

int evmpi__work_new(evmpi_pg_t *pg, const evmpi_op_t *op, size_t ntensors, evmpi_work_t **out) {
  size_t extra = ntensors > 1 ? (ntensors - 1) * sizeof(evmpi_tensor_t) : 0;
  evmpi_work_t *w = extra == 0 ? pool_get() : NULL;
  bool pooled = w != NULL;
  if (!w)
    w = calloc(1, sizeof *w + extra);
  if (!w)
    return evmpi__fail(EVMPI_ERR_NOMEM, "%s: out of memory", op->opname);
  if (!pooled)
    evmpi__future_sync_init(&w->future);
  evmpi__ref_init(&w->ref, 2, work_last); /* the caller's and the in-flight one */
  w->pg = pg;
  evmpi__pg_retain(pg);
  w->op = op;
  w->kind = op->kind;
  w->state = EVMPI_WORK_QUEUED;
  w->seq = atomic_fetch_add_explicit(&pg->next_seq, 1, memory_order_relaxed) + 1;
  atomic_init(&w->finished, false);
  w->t_queued = evmpi__now_ns();
  w->tensors = w->inline_tensors;
  w->ntensors = ntensors;
  w->numel = -1;
  w->request = MPI_REQUEST_NULL;
  atomic_init(&w->source_rank, -1);
  w->recv_bytes = -1;
  evmpi__future_reset(&w->future, w, &w->ref, &pg->bridge.sink);
  *out = w;
  return EVMPI_OK;
}

static void work_free(evmpi_work_t *w) {
  evmpi_pg_t *pg = w->pg;
  evmpi__future_cleanup(&w->future);
  free(w->error_text);
  if (w->op->args == EVMPI_ARGS_ALLTOALL)
    free(w->args.alltoall.splits);
  /* Works with at most one tensor slot are all sizeof *w: reusable. */
  if (w->ntensors > 1 || !pool_put(w))
    work_destroy(w);
  evmpi__pg_release(pg);
}

static void work_last(evmpi_ref_t *ref) { work_free(evmpi__container_of(ref, evmpi_work_t, ref)); }

void evmpi__work_discard(evmpi_work_t *w) { work_free(w); }

int evmpi__work_place(evmpi_work_t *w) {
  /* Every operation has checked its tensors against each other
   * (evmpi__check_list, evmpi__check_same_device): the first one's device
   * is the work's. */
  w->device = (evmpi_device_t){EVMPI_DEVICE_CPU, 0};
  if (w->ntensors == 0)
    return EVMPI_OK;
  w->device = w->tensors[0].device;
  if (w->device.type != EVMPI_DEVICE_CUDA)
    return EVMPI_OK;
  switch (w->pg->cuda_path) {
  case EVMPI_CUDA_STAGED:
  case EVMPI_CUDA_DIRECT:
    return EVMPI_OK;
  case EVMPI_CUDA_REFUSED:
    return evmpi__fail(EVMPI_ERR_UNSUPPORTED, "%s: the tensors are on cuda:%d, this MPI is not "
                       "CUDA-aware, and EVMPI_CUDA_STAGING=0 turned staging through host "
                       "memory off", w->op->opname, w->device.index);
  case EVMPI_CUDA_NONE:
    break;
  }
  return evmpi__fail(EVMPI_ERR_UNSUPPORTED, "%s: the tensors are on cuda:%d but this evmpi was "
                     "built without CUDA", w->op->opname, w->device.index);
}

void evmpi_work_release(evmpi_work_t *w) {
  if (w)
    evmpi__ref_put(&w->ref);
}

void evmpi__work_finish(evmpi_work_t *w, int status, const char *msg) {
  evmpi__work_finish_at(w, status, msg, 0);
}

static void finish(evmpi_work_t *w, int status, const char *msg, int64_t now_ns,
                   evmpi_future_batch_t *batch) {
  bool expected = false;
  if (!atomic_compare_exchange_strong(&w->finished, &expected, true))
    return; /* completed already (a timed-out collective returning late) */
  w->t_finished = now_ns ? now_ns : evmpi__now_ns();
  atomic_fetch_sub_explicit(&w->pg->inflight, 1, memory_order_relaxed);
  if (!w->t_started)
    w->t_started = w->t_finished; /* never ran: aborted in the queue */
  evmpi__timeline_record(w, status);
  const char *text = NULL;
  if (status != EVMPI_OK)
    text = w->error_text ? w->error_text : msg;
  /* inline_tensors, not tensors: a staged CUDA collective points tensors at
   * host copies while it runs, and the watchdog may finish it meanwhile. */
  /* The in-flight reference goes with it (the future counts with the
   * work's reference). */
  evmpi__future_complete_release_batch(&w->future, status, text, w->inline_tensors,
                                       w->noutputs, batch);
}

void evmpi__work_finish_at(evmpi_work_t *w, int status, const char *msg, int64_t now_ns) {
  finish(w, status, msg, now_ns, NULL);
}

void evmpi__work_finish_batch(evmpi_work_t *w, int status, int64_t now_ns,
                              evmpi_future_batch_t *batch) {
  finish(w, status, NULL, now_ns, batch);
}

int evmpi__work_mpi_error(evmpi_work_t *w, const char *call, int rc) {
  char text[MPI_MAX_ERROR_STRING + 32];
  evmpi__mpi_error_text(rc, text, sizeof text);
  free(w->error_text);
  w->error_text = evmpi__asprintf("%s: %s failed: %s", w->op->opname, call, text);
  return EVMPI_ERR_MPI;
}

int evmpi__work_mpi_result(evmpi_work_t *w, int rc) {
  return rc == MPI_SUCCESS ? EVMPI_OK : evmpi__work_mpi_error(w, w->op->mpi_call, rc);
}

int evmpi__work_fail(evmpi_work_t *w, int status, const char *fmt, ...) {
  char text[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  free(w->error_text);
  w->error_text = evmpi__asprintf("%s: %s", w->op->opname, text);
  return status;
}

int evmpi_work_wait(evmpi_work_t *w, int timeout_ms) {
  if (!w)
    return evmpi__fail(EVMPI_ERR_INVALID, "work_wait: work is NULL");
  return evmpi_future_wait(&w->future, timeout_ms);
}

bool evmpi_work_is_completed(evmpi_work_t *w) { return w && evmpi_future_is_done(&w->future); }

bool evmpi_work_is_success(evmpi_work_t *w) {
  return w && evmpi_future_status(&w->future) == EVMPI_OK;
}

int evmpi_work_status(evmpi_work_t *w) {
  return w ? evmpi_future_status(&w->future) : EVMPI_ERR_INVALID;
}

const char *evmpi_work_error(evmpi_work_t *w) { return w ? evmpi_future_error(&w->future) : NULL; }

int evmpi_work_source_rank(evmpi_work_t *w) {
  if (!w || w->kind != EVMPI_WORK_RECV || !evmpi_future_is_done(&w->future))
    return -1;
  return atomic_load(&w->source_rank);
}

size_t evmpi_work_result(evmpi_work_t *w, const evmpi_tensor_t **tensors) {
  if (!w) {
    if (tensors)
      *tensors = NULL;
    return 0;
  }
  return evmpi_future_value(&w->future, tensors);
}

const char *evmpi_work_name(evmpi_work_t *w) { return w ? w->op->name : NULL; }

int evmpi_work_get_record(evmpi_work_t *w, evmpi_work_record_t *rec) {
  if (!w || !rec)
    return evmpi__fail(EVMPI_ERR_INVALID, "work_get_record: %s is NULL", w ? "rec" : "work");
  rec->seq = w->seq;
  rec->queued_ns = w->t_queued;
  rec->started_ns = atomic_load(&w->t_started);
  rec->finished_ns = atomic_load(&w->t_finished);
  return EVMPI_OK;
}

evmpi_future_t *evmpi_work_get_future(evmpi_work_t *w) { return w ? &w->future : NULL; }
