/*
 * future-internal.h: futures, their callbacks and joins. Private to lib/;
 * names with a double underscore are hidden from the shared library.
 */
#ifndef EVMPI_FUTURE_INTERNAL_H
#define EVMPI_FUTURE_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

#include <pthread.h>
#include <stdatomic.h>

#include "ref-internal.h"

typedef struct evmpi_cont evmpi_cont_t;
typedef struct evmpi_join_link evmpi_join_link_t;

/* One callback registered on a future. Defined here (not in future.c) so
 * that a future can hold its first callback inline: most works get exactly
 * one, and a malloc + free per operation was a measurable part of the
 * cost of queued small collectives (doc/performance.md). */
struct evmpi_cont {
  evmpi_cont_t *next;
  bool for_work;
  union {
    evmpi_work_cb work;
    evmpi_future_cb future;
  } fn;
  void *arg;
};

/* Where a future's callbacks run: a group's loop (bridge.c makes one per
 * group). A future that may post to a sink holds a reference on ref, the
 * group's count. */
typedef struct evmpi_future_sink {
  evmpi_ref_t *ref;
  /* Hands f to the loop (the caller has taken a reference on f for it);
   * false when the loop is gone, and the caller delivers f itself. */
  bool (*post)(struct evmpi_future_sink *sink, evmpi_future_t *f);
  /* The same for a list, linked newest first through next_delivery from
   * newest to oldest, in one hand-over; false: none was taken. */
  bool (*post_list)(struct evmpi_future_sink *sink, evmpi_future_t *newest,
                    evmpi_future_t *oldest);
  /* Someone waits for a future of this sink's (or tests one that is not
   * done): work held back for the loop thread goes to the worker now. */
  void (*kick)(struct evmpi_future_sink *sink);
} evmpi_future_sink_t;

struct evmpi_future {
  evmpi_ref_t *ref;         /* the count: the owning work's, or own_ref */
  evmpi_ref_t own_ref;      /* standalone futures (joins) only */
  evmpi_work_t *owner;      /* the work whose future this is, or NULL */
  evmpi_future_sink_t *sink; /* whose loop runs the continuations */
  bool sink_ref;            /* f holds a reference on sink->ref (standalone
                               futures; a work's holds its group through the work) */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  atomic_bool done;         /* set under mu after status, error and value, with
                               release: once it reads true they are final and
                               are read without mu */
  int status;               /* written under mu before done */
  char *error;              /* written under mu before done */
  const evmpi_tensor_t *value;
  size_t nvalue;
  evmpi_cont_t *conts, *conts_tail; /* under mu: callbacks not yet run */
  bool queued;              /* under mu: on the bridge's delivery list */
  evmpi_join_link_t *parents; /* under mu: joins waiting on this one */
  evmpi_future_t *next_delivery; /* bridge list link, set before the push */
  /* joins (evmpi_future_all) only: */
  atomic_size_t pending;
  evmpi_future_t **children;
  size_t nchildren;
  /* The first callback's storage (see struct evmpi_cont). Taken once, under
   * mu, and never reused for the future's life: a callback that registers
   * another on the same future while it runs gets a malloc'ed one. */
  evmpi_cont_t inline_cont;
  bool inline_cont_taken;   /* under mu */
};

/* The fields of a work's future, whose memory is zero but for mu and cv
 * (made by evmpi__future_sync_init, and kept made from one use of a pooled
 * work to the next, work.c): it counts with owner_ref, the work's, and
 * posts to sink (NULL: its callbacks run where it completes). */
void evmpi__future_reset(evmpi_future_t *f, evmpi_work_t *owner, evmpi_ref_t *owner_ref,
                         evmpi_future_sink_t *sink);
void evmpi__future_sync_init(evmpi_future_t *f);
void evmpi__future_sync_destroy(evmpi_future_t *f);
/* Frees what the future holds (callbacks, links, error text, its group
 * reference if it has one); not mu and cv (evmpi__future_sync_destroy). */
void evmpi__future_cleanup(evmpi_future_t *f);
/* Marks f done (any thread), wakes waiters, counts down joins and hands
 * its callbacks to the loop. error is copied. */
void evmpi__future_complete(evmpi_future_t *f, int status, const char *error,
                            const evmpi_tensor_t *value, size_t nvalue);
/* The same, and drops one of the caller's references on f (a finished
 * work's in-flight one): handed to the delivery when the callbacks are
 * scheduled, which saves a count up and down per completion. */
void evmpi__future_complete_release(evmpi_future_t *f, int status, const char *error,
                                    const evmpi_tensor_t *value, size_t nvalue);
/* Reverses a list of futures linked through next_delivery (the bridge's
 * and a batch's are pushed newest first; delivery goes oldest first). */
static inline evmpi_future_t *evmpi__future_list_reverse(evmpi_future_t *f) {
  evmpi_future_t *reversed = NULL;
  while (f) {
    evmpi_future_t *next = f->next_delivery;
    f->next_delivery = reversed;
    reversed = f;
    f = next;
  }
  return reversed;
}

/* Futures completed one after another on one thread, whose callbacks go
 * to their loop together (evmpi__future_batch_post): one hand-over for a
 * batch of sends and receives, not one per completion. Zero-initialised;
 * linked newest first through next_delivery. */
typedef struct {
  evmpi_future_sink_t *sink;
  evmpi_future_t *newest, *oldest;
} evmpi_future_batch_t;
/* evmpi__future_complete_release, with the hand-over of f's callbacks
 * (if any) added to batch rather than made now (batch NULL: made now); a
 * future of another sink posts what batch holds first, so the order stays. */
void evmpi__future_complete_release_batch(evmpi_future_t *f, int status, const char *error,
                                          const evmpi_tensor_t *value, size_t nvalue,
                                          evmpi_future_batch_t *batch);
/* Hands what batch holds to its loop, oldest first, and empties it. */
void evmpi__future_batch_post(evmpi_future_batch_t *batch);
/* Runs f's pending callbacks; called on the loop thread by the bridge
 * (or inline once the group is gone). Drops the delivery's reference. */
void evmpi__future_deliver(evmpi_future_t *f);

#endif /* EVMPI_FUTURE_INTERNAL_H */
