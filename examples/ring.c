/* ring.c: a point-to-point pipeline around a ring of ranks, driven entirely
 * by callbacks on a libevent loop.
 *
 *   mpirun -np 3 examples/ring
 *
 * Rank 0 injects TOKENS tokens at once. Every rank takes whatever arrives
 * (evmpi_recv_anysource), adds its contribution to the token and passes it
 * on to the next rank (evmpi_send); rank 0 sends each token round again
 * until it has done LAPS laps. Several tokens are in the ring at the same
 * time, so the ranks work as a pipeline. With one rank the ring is rank 0
 * sending to itself.
 *
 * Each hop on rank r adds (r + 1) * (token + 1), so after LAPS laps token t
 * carries LAPS * (1 + 2 + ... + size) * (t + 1). Every rank checks that
 * each message came from its left neighbour and that the laps and counts
 * add up; rank 0 also checks the final values. The exit status is 0 only
 * when every check passed (mpirun then exits 0 too).
 *
 * The pattern to copy: keep one receive posted, re-post it from its own
 * callback, give every send its own buffer and free it in the send's
 * callback (the buffer must stay untouched until the send completes), and
 * leave the loop when the expected number of messages has been handled. */
#include <event2/event.h>
#include <evmpi.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "example.h"

enum {
  TOKENS = 4,       /* tokens in flight at the same time */
  LAPS = 5,         /* times each token goes round the ring */
  TAG = 7,          /* the tag of every ring message */
  MSG_LEN = 3,      /* int64 elements of one message: token, lap, value */
  TIMEOUT_S = 30,   /* give up (and fail) if the ring stalls this long */
};

/* One message: which token, how many laps it has completed (counted by
 * rank 0 as the token comes back), and the running value. */
typedef struct {
  int64_t token, lap, value;
} msg_t;

struct ring {
  struct event_base *base;
  evmpi_pg_t *pg;
  int rank, size, left, right;
  msg_t in;                 /* the buffer of the one posted receive */
  int received, expected;   /* messages handled / to handle on this rank */
  int sends_in_flight;
  int64_t final[TOKENS];    /* rank 0: each token's value after its last lap */
  int finished[TOKENS];     /* rank 0: laps seen per token */
  int errors;
};

/* A send buffer of its own, freed when the send completes. */
struct outgoing {
  struct ring *r;
  msg_t msg;
};

static void post_receive(struct ring *r);

/* Leaves the loop once this rank has handled every message it will get and
 * its sends have gone out. */
static void maybe_finish(struct ring *r) {
  if (r->received == r->expected && r->sends_in_flight == 0)
    event_base_loopbreak(r->base);
}

static void on_sent(evmpi_work_t *work, void *arg) {
  struct outgoing *o = arg;
  struct ring *r = o->r;
  if (!evmpi_work_is_success(work)) {
    fprintf(stderr, "rank %d: send failed: %s\n", r->rank, evmpi_work_error(work));
    r->errors++;
  }
  evmpi_work_release(work);
  free(o); /* only now may the send buffer go */
  r->sends_in_flight--;
  maybe_finish(r);
}

static void forward(struct ring *r, const msg_t *m) {
  struct outgoing *o = malloc(sizeof *o);
  if (!o) {
    fprintf(stderr, "rank %d: out of memory\n", r->rank);
    r->errors++;
    event_base_loopbreak(r->base);
    return;
  }
  o->r = r;
  o->msg = *m;
  evmpi_tensor_t t = evmpi_tensor_flat(&o->msg, EVMPI_INT64, MSG_LEN);
  evmpi_work_t *work = NULL;
  int rc = evmpi_send(r->pg, &t, r->right, TAG, &work);
  if (rc != EVMPI_OK) {
    fprintf(stderr, "rank %d: evmpi_send: %s\n", r->rank, evmpi_last_error());
    free(o);
    r->errors++;
    event_base_loopbreak(r->base);
    return;
  }
  r->sends_in_flight++;
  evmpi_work_on_complete(work, on_sent, o);
}

static void on_received(evmpi_work_t *work, void *arg) {
  struct ring *r = arg;
  if (!evmpi_work_is_success(work)) {
    fprintf(stderr, "rank %d: receive failed: %s\n", r->rank, evmpi_work_error(work));
    evmpi_work_release(work);
    r->errors++;
    event_base_loopbreak(r->base);
    return;
  }
  int src = evmpi_work_source_rank(work);
  evmpi_work_release(work);
  msg_t m = r->in; /* copy it out: the buffer is reused by the next receive */
  r->received++;
  if (r->received < r->expected)
    post_receive(r); /* keep one receive posted while we work */

  if (src != r->left) {
    fprintf(stderr, "rank %d: message from rank %d, expected rank %d\n", r->rank, src, r->left);
    r->errors++;
  }
  if (m.token < 0 || m.token >= TOKENS) {
    fprintf(stderr, "rank %d: bad token %" PRId64 "\n", r->rank, m.token);
    r->errors++;
    event_base_loopbreak(r->base);
    return;
  }
  if (r->rank == 0) {
    /* The token is back at its origin: one more lap done. */
    m.lap++;
    r->finished[m.token]++;
    if (m.lap != r->finished[m.token]) {
      fprintf(stderr, "rank 0: token %" PRId64 " says lap %" PRId64 ", counted %d\n", m.token,
              m.lap, r->finished[m.token]);
      r->errors++;
    }
    if (m.lap == LAPS) {
      r->final[m.token] = m.value;
      maybe_finish(r);
      return; /* retired */
    }
  }
  m.value += (int64_t)(r->rank + 1) * (m.token + 1);
  forward(r, &m);
  maybe_finish(r);
}

static void post_receive(struct ring *r) {
  evmpi_tensor_t t = evmpi_tensor_flat(&r->in, EVMPI_INT64, MSG_LEN);
  evmpi_work_t *work = NULL;
  if (evmpi_recv_anysource(r->pg, &t, TAG, &work) != EVMPI_OK) {
    fprintf(stderr, "rank %d: evmpi_recv_anysource: %s\n", r->rank, evmpi_last_error());
    r->errors++;
    event_base_loopbreak(r->base);
    return;
  }
  evmpi_work_on_complete(work, on_received, r);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg) {
  struct ring *r = arg;
  fprintf(stderr, "rank %d: timed out after %d s with %d of %d messages\n", r->rank, TIMEOUT_S,
          r->received, r->expected);
  r->errors++;
  event_base_loopbreak(r->base);
}

int main(void) {
  struct ring r;
  memset(&r, 0, sizeof r);
  r.base = event_base_new();
  if (example_create_on(r.base, &r.pg))
    return 1;
  r.rank = evmpi_pg_rank(r.pg);
  r.size = evmpi_pg_size(r.pg);
  r.right = (r.rank + 1) % r.size;
  r.left = (r.rank + r.size - 1) % r.size;
  /* Every token passes every rank once per lap. */
  r.expected = TOKENS * LAPS;

  struct timeval limit = {TIMEOUT_S, 0};
  struct event *timer = evtimer_new(r.base, on_timeout, &r);
  evtimer_add(timer, &limit);

  post_receive(&r);
  if (r.rank == 0)
    for (int t = 0; t < TOKENS; t++) {
      msg_t m = {t, 0, (int64_t)(t + 1)}; /* rank 0's contribution, 1 * (t + 1) */
      forward(&r, &m);
    }
  if (!r.errors)
    event_base_dispatch(r.base);

  if (r.rank == 0) {
    int64_t per_lap = (int64_t)r.size * (r.size + 1) / 2;
    for (int t = 0; t < TOKENS; t++) {
      int64_t want = LAPS * per_lap * (t + 1);
      printf("token %d: %d laps through %d rank(s), value %" PRId64 " (expected %" PRId64 ")\n", t,
             r.finished[t], r.size, r.final[t], want);
      if (r.final[t] != want || r.finished[t] != LAPS)
        r.errors++;
    }
  }
  printf("rank %d of %d: %d messages from rank %d, forwarded to rank %d: %s\n", r.rank, r.size,
         r.received, r.left, r.right, r.errors ? "FAILED" : "ok");
  fflush(stdout);

  event_free(timer);
  evmpi_pg_destroy(r.pg); /* cancels the receive still posted if we failed */
  event_base_free(r.base);
  return r.errors ? 1 : 0;
}
