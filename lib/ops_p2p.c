/* ops_p2p.c: sends and receives: their prepare and issue functions, which
 * the generic submit path (op_submit.c) calls. They are issued at once on
 * the calling thread (MPI_Isend/MPI_Irecv never block) and handed to the
 * poller; their deadlines. */
#include "ops-internal.h"
#include "bigcount-internal.h"
#include "clock-internal.h"
#include "cuda_p2p-internal.h"
#include "mpi_ext-internal.h"
#include "op_table-internal.h"
#include "pg-internal.h"
#include "poller-internal.h"
#include "status-internal.h"
#include "tensor-internal.h"
#include "work-internal.h"


static int check_tag(const char *op, const evmpi_pg_t *pg, int tag) {
  if (tag < 0 || tag > pg->tag_ub)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: tag %d is outside 0..%d (MPI_TAG_UB)", op, tag,
                       pg->tag_ub);
  return EVMPI_OK;
}

/* A send's or a receive's arguments; nothing is allocated. */
int evmpi__prepare_p2p(const evmpi_op_t *op, evmpi_pg_t *pg, const evmpi_op_call_t *call,
                       evmpi_op_plan_t *plan) {
  const char *opname = op->opname;
  bool send = op->kind == EVMPI_WORK_SEND;
  const evmpi_tensor_t *t = send ? call->input : call->output;
  int64_t numel = 0;
  int rc = evmpi__check_tensor(opname, "tensor", t, &numel);
  /* A named peer is checked whatever its value: MPI_ANY_SOURCE's (-1 in
   * Open MPI, -2 in MPICH) given to evmpi_recv is a bad rank, not a wildcard. */
  if (rc == EVMPI_OK && op->id != EVMPI_OP_RECV_ANYSOURCE)
    rc = evmpi__pg_check_rank(opname, send ? "dst" : "src", pg, call->peer);
  if (rc == EVMPI_OK)
    rc = check_tag(opname, pg, call->tag);
  if (rc != EVMPI_OK)
    return rc;
  if (send) {
    plan->inputs = t;
    plan->ninputs = 1;
  } else {
    plan->outputs = t;
    plan->noutputs = 1;
  }
  plan->numel = numel;
  plan->args.p2p.peer = op->id == EVMPI_OP_RECV_ANYSOURCE ? MPI_ANY_SOURCE : call->peer;
  plan->args.p2p.tag = call->tag;
  return EVMPI_OK;
}

/* Issues w's request and hands it to the poller. */
static int issue_request(evmpi_pg_t *pg, evmpi_work_t *w) {
  const evmpi_op_t *op = w->op;
  int rc;
  /* A CUDA tensor goes to MPI as its device pointer (CUDA-aware MPI) or
   * through a pinned host buffer, with its device current meanwhile. */
  void *buf = w->tensors[0].data;
#ifdef EVMPI_HAVE_CUDA
  int saved_device = -1;
  if (w->device.type == EVMPI_DEVICE_CUDA &&
      (rc = evmpi__cuda_p2p_enter(w, &buf, &saved_device)) != EVMPI_OK)
    return rc;
#endif
  /* Counts beyond INT_MAX travel as one element of a derived type, which
   * MPI lets us free as soon as the request is posted. */
  evmpi_block_t b;
  const char *call = "MPI_Type_create_struct";
  int peer = w->args.p2p.peer, tag = w->args.p2p.tag;
  rc = evmpi__block_make(w->numel, w->tensors[0].dtype, &b);
  if (rc == MPI_SUCCESS) {
    call = op->mpi_call;
    evmpi__mpi_match_enter();
    if (op->kind == EVMPI_WORK_SEND)
      rc = MPI_Isend(buf, b.count, b.type, peer, tag, pg->comm, &w->request);
    else
      rc = MPI_Irecv(buf, b.count, b.type, peer, tag, pg->comm, &w->request);
    evmpi__mpi_match_leave();
    evmpi__block_free(&b);
  }
#ifdef EVMPI_HAVE_CUDA
  if (w->device.type == EVMPI_DEVICE_CUDA)
    evmpi__cuda_p2p_leave(saved_device);
#endif
  if (rc != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING + 32];
    evmpi__mpi_error_text(rc, text, sizeof text);
#ifdef EVMPI_HAVE_CUDA
    evmpi__cuda_p2p_discard(w);
#endif
    return evmpi__fail(EVMPI_ERR_MPI, "%s: %s failed: %s", op->opname, call, text);
  }
  /* Issued as it was submitted: its submission's time, not a second
   * clock read (a sizeable part of a small message's cost). */
  w->t_started = w->t_queued;
  /* On failure the request was cancelled and freed; a freed send may still
   * be read by MPI, so a staged pinned buffer is left to the process. */
  return evmpi__poller_submit(&pg->poller, w);
}

int evmpi__issue_p2p(evmpi_work_t *w) {
  int rc = evmpi__work_place(w);
  if (rc != EVMPI_OK)
    return rc;
  /* From here to the hand-over, destroy waits before it frees the
   * communicator this request is issued on. */
  evmpi_pg_t *pg = w->pg;
  if (!evmpi__pg_enter_submit(w->op->opname, pg))
    return EVMPI_ERR_ABORTED;
  rc = issue_request(pg, w);
  evmpi__pg_leave_submit(pg);
  return rc;
}

int evmpi_pg_set_p2p_timeout(evmpi_pg_t *pg, int timeout_ms) {
  if (!pg)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_set_p2p_timeout: pg is NULL");
  if (timeout_ms < 0)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_set_p2p_timeout: timeout_ms %d is negative (0 = "
                       "no deadline)", timeout_ms);
  if (atomic_load(&pg->closing))
    return evmpi__fail(EVMPI_ERR_ABORTED, "pg_set_p2p_timeout: the group is being destroyed");
  evmpi__poller_set_timeout(&pg->poller, timeout_ms);
  return EVMPI_OK;
}

int evmpi_work_set_deadline(evmpi_work_t *work, int timeout_ms) {
  if (!work)
    return evmpi__fail(EVMPI_ERR_INVALID, "work_set_deadline: work is NULL");
  if (work->kind == EVMPI_WORK_COLLECTIVE)
    return evmpi__fail(EVMPI_ERR_INVALID, "work_set_deadline: %s (#%llu) is a collective; "
                       "collectives are bounded by the group timeout (evmpi_pg_set_timeout)",
                       work->op->name, (unsigned long long)work->seq);
  if (timeout_ms < 0)
    return evmpi__fail(EVMPI_ERR_INVALID, "work_set_deadline: timeout_ms %d is negative (0 = "
                       "no deadline)", timeout_ms);
  return evmpi__poller_set_deadline(&work->pg->poller, work, timeout_ms);
}
