/* gate.c: the arrival gate (worker.c says what it is for). It was one
 * MPI_Iallreduce (MIN) of the count; this is the same reduction done by
 * hand over point-to-point messages on the group's internal communicator,
 * a dissemination: in round r each rank sends the least count it has seen
 * to rank + 2^r and receives from rank - 2^r, so after ceil(log2 size)
 * rounds every rank has seen every count (a minimum does not mind seeing
 * one twice). Each round has its own tag, so no message of one round can
 * meet a receive of another, and gates of one group follow each other in
 * MPI's non-overtaking order. Open MPI's nonblocking collectives cost more
 * per small operation than these messages (doc/performance.md); a chain
 * of small collectives passes one gate per link.
 *
 * A gate may also carry a small allreduce (evmpi__gate_post_allreduce):
 * in a group of a power-of-two size the rounds are those of recursive
 * doubling (round r: exchange with rank ^ 2^r, then reduce), each message
 * the count, whether every rank so far put its data in, and the data
 * reduced so far. Once every rank has reached the gate with its data the
 * allreduce is done too: one exchange per round instead of the gate's and
 * then the blocking call's, which was most of what a chain of small
 * allreduces cost over raw MPI (doc/performance.md). */
#include "gate-internal.h"
#include "clock-internal.h"
#include "mpi_ext-internal.h"

#include <sched.h>
#include <string.h>
#include <time.h>

/* A carrying gate's round: the count, the flag and the data so far to
 * the partner, and the partner's into msg_in. */
static int start_carry_round(evmpi_gate_t *g) {
  int partner = g->rank ^ (1 << g->round);
  int tag = EVMPI_GATE_TAG + 32 + g->round;
  int n = (int)(offsetof(evmpi_gate_msg_t, data) + g->bytes);
  g->msg_out.count = g->value;
  g->msg_out.all_in = g->all_in;
  g->msg_out.quiet = g->quiet;
  if (g->bytes)
    memcpy(g->msg_out.data, g->stage, g->bytes);
  g->reqs[0] = g->reqs[1] = MPI_REQUEST_NULL;
  evmpi__mpi_match_enter();
  int rc = MPI_Irecv(&g->msg_in, n, MPI_BYTE, partner, tag, g->comm, &g->reqs[1]);
  if (rc == MPI_SUCCESS)
    rc = MPI_Isend(&g->msg_out, n, MPI_BYTE, partner, tag, g->comm, &g->reqs[0]);
  evmpi__mpi_match_leave();
  return rc;
}

/* A carrying gate's round is over: the least count, and the lower rank's
 * data reduced with the higher rank's (MPI_Reduce_local(in, inout) makes
 * inout = in op inout), so that every rank computes the same values in
 * the same order. */
static int end_carry_round(evmpi_gate_t *g) {
  int partner = g->rank ^ (1 << g->round);
  if (g->msg_in.count < g->value)
    g->value = (int)g->msg_in.count;
  g->all_in = g->all_in && g->msg_in.all_in;
  g->quiet = g->quiet && g->msg_in.quiet;
  if (!g->all_in)
    return MPI_SUCCESS; /* the collective runs as usual: nothing to reduce */
  if (partner < g->rank)
    return MPI_Reduce_local(g->msg_in.data, g->stage, g->elems, g->dtype, g->op);
  int rc = MPI_Reduce_local(g->msg_out.data, g->msg_in.data, g->elems, g->dtype, g->op);
  if (rc == MPI_SUCCESS && g->bytes)
    memcpy(g->stage, g->msg_in.data, g->bytes);
  return rc;
}

static int start_round(evmpi_gate_t *g) {
  if (g->carrying)
    return start_carry_round(g);
  int step = 1 << g->round;
  int to = (g->rank + step) % g->size;
  int from = ((g->rank - step) % g->size + g->size) % g->size;
  g->out[0] = g->value;
  g->out[1] = g->quiet;
  g->reqs[0] = g->reqs[1] = MPI_REQUEST_NULL;
  evmpi__mpi_match_enter();
  int rc = MPI_Irecv(g->in, 2, MPI_INT, from, EVMPI_GATE_TAG + g->round, g->comm, &g->reqs[1]);
  if (rc == MPI_SUCCESS)
    rc = MPI_Isend(g->out, 2, MPI_INT, to, EVMPI_GATE_TAG + g->round, g->comm, &g->reqs[0]);
  evmpi__mpi_match_leave();
  return rc;
}

static void setup(evmpi_gate_t *g, MPI_Comm comm, int rank, int size, int count, bool quiet) {
  g->comm = comm;
  g->rank = rank;
  g->size = size;
  g->value = count;
  g->quiet = quiet;
  g->round = 0;
  g->rounds = 0;
  while ((1 << g->rounds) < size)
    g->rounds++;
  g->carrying = false;
}

int evmpi__gate_post(evmpi_gate_t *g, MPI_Comm comm, int rank, int size, int count, bool quiet) {
  setup(g, comm, rank, size, count, quiet);
  return g->rounds ? start_round(g) : MPI_SUCCESS;
}

int evmpi__gate_post_allreduce(evmpi_gate_t *g, MPI_Comm comm, int rank, int size, int count,
                               bool quiet, void *data, int elems, MPI_Datatype dtype,
                               size_t bytes, MPI_Op op) {
  setup(g, comm, rank, size, count, quiet);
  g->carrying = true;
  g->all_in = data != NULL;
  g->data = data;
  g->elems = elems;
  g->dtype = dtype;
  g->bytes = bytes;
  g->op = op;
  if (data)
    memcpy(g->stage, data, bytes);
  else
    memset(g->stage, 0, bytes); /* sent all the same: defined bytes */
  return g->rounds ? start_round(g) : MPI_SUCCESS;
}

bool evmpi__gate_complete(evmpi_gate_t *g) {
  if (!g->carrying)
    return true;
  if (!g->all_in)
    return false;
  if (g->bytes)
    memcpy(g->data, g->stage, g->bytes);
  return true;
}

int evmpi__gate_test(evmpi_gate_t *g, bool *passed) {
  while (g->round < g->rounds) {
    int done = 0;
    evmpi__mpi_match_enter();
    evmpi__mpi_test_begin();
    int rc = MPI_Testall(2, g->reqs, &done, MPI_STATUSES_IGNORE);
    evmpi__mpi_test_end();
    evmpi__mpi_match_leave();
    if (rc != MPI_SUCCESS || !done) {
      *passed = false;
      return rc;
    }
    if (g->carrying)
      rc = end_carry_round(g);
    else {
      if (g->in[0] < g->value)
        g->value = g->in[0];
      g->quiet = g->quiet && g->in[1];
    }
    if (rc != MPI_SUCCESS) {
      *passed = false;
      return rc;
    }
    if (++g->round < g->rounds && (rc = start_round(g)) != MPI_SUCCESS) {
      *passed = false;
      return rc;
    }
  }
  *passed = true;
  return MPI_SUCCESS;
}

/* A peer that is already there answers in well under a microsecond, and a
 * sched_yield costs more than that here: the first tests are back to
 * back. Then a thread that shares the core may want it. Then a peer
 * arriving after a wait of W is seen at most about W/8 (never more than
 * the group's EVMPI_COLL_IDLE_POLL_US) later, and a long wait costs one
 * wake-up per EVMPI_COLL_IDLE_POLL_US. The waiting thread sets a 1 us
 * timer slack (worker.c): the default 50 us would stretch the first
 * sleeps. */
#define TIGHT_NS 5000
#define SPIN_NS 50000
#define SLEEP_MIN_NS 1000

int evmpi__gate_wait(evmpi_gate_t *g, int64_t sleep_max_ns) {
  int64_t t0 = evmpi__now_ns();
  bool slept = false;
  for (;;) {
    bool passed = false;
    int rc = evmpi__gate_test(g, &passed);
    if (rc != MPI_SUCCESS || passed)
      return rc;
    /* Open MPI's MPI_Testall makes progress only when the requests are not
     * complete, and returns without looking at them again: a peer's
     * message that came while we slept is received by the first test
     * after the sleep and seen only by the next one. Without this second
     * test, a whole sleep later. */
    if (slept) {
      slept = false;
      continue;
    }
    int64_t waited = evmpi__now_ns() - t0;
    if (waited < TIGHT_NS)
      continue;
    if (waited < SPIN_NS) {
      sched_yield();
      continue;
    }
    int64_t ns = waited / 8;
    if (ns < SLEEP_MIN_NS)
      ns = SLEEP_MIN_NS;
    if (ns > sleep_max_ns)
      ns = sleep_max_ns;
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    nanosleep(&ts, NULL);
    slept = true;
  }
}
