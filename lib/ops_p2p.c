/* ops_p2p.c: sends and receives. They are issued at once on the calling
 * thread (MPI_Isend/MPI_Irecv never block) and handed to the poller. */
#include "evmpi-internal.h"


static int check_tag(const char *op, const evmpi_pg_t *pg, int tag) {
  if (tag < 0 || tag > pg->tag_ub)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: tag %d is outside 0..%d (MPI_TAG_UB)", op, tag,
                       pg->tag_ub);
  return EVMPI_OK;
}

typedef struct {
  const evmpi_op_t *op;
  const evmpi_tensor_t *tensor;
  int peer;
  bool any_source; /* evmpi_recv_anysource: peer is MPI_ANY_SOURCE */
  int tag;
} p2p_args_t;

static int issue_p2p(evmpi_pg_t *pg, const p2p_args_t *a, evmpi_work_t *w, int64_t numel);

static int submit_p2p(evmpi_pg_t *pg, const p2p_args_t *a, evmpi_work_t **out) {
  const char *opname = a->op->opname;
  int64_t numel = 0;
  evmpi_work_t *w;
  int rc = evmpi__pg_check(opname, pg, out);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(opname, "tensor", a->tensor, &numel);
  /* A named peer is checked whatever its value: MPI_ANY_SOURCE's (-1 in
   * Open MPI, -2 in MPICH) given to evmpi_recv is a bad rank, not a wildcard. */
  if (rc == EVMPI_OK && !a->any_source)
    rc = evmpi__pg_check_rank(opname, a->op->kind == EVMPI_WORK_SEND ? "dst" : "src", pg, a->peer);
  if (rc == EVMPI_OK)
    rc = check_tag(opname, pg, a->tag);
  if (rc == EVMPI_OK)
    rc = evmpi__work_new(pg, a->op, 1, &w);
  if (rc != EVMPI_OK)
    return rc;
  w->tensors[0] = *a->tensor;
  w->noutputs = a->op->kind == EVMPI_WORK_RECV ? 1 : 0;
  w->numel = numel;
  w->args.p2p.peer = a->peer;
  w->args.p2p.tag = a->tag;
  rc = evmpi__work_place(w);
  if (rc != EVMPI_OK) {
    evmpi__work_discard(w);
    return rc;
  }
  /* From here to the hand-over, destroy waits before it frees the
   * communicator this request is issued on. */
  if (!evmpi__pg_enter_submit(opname, pg)) {
    evmpi__work_discard(w);
    return EVMPI_ERR_ABORTED;
  }
  rc = issue_p2p(pg, a, w, numel);
  evmpi__pg_leave_submit(pg);
  if (rc != EVMPI_OK)
    return rc;
  *out = w;
  return EVMPI_OK;
}

/* Issues w's request and hands it to the poller; on failure w is discarded. */
static int issue_p2p(evmpi_pg_t *pg, const p2p_args_t *a, evmpi_work_t *w, int64_t numel) {
  int rc;
  /* A CUDA tensor goes to MPI as its device pointer (CUDA-aware MPI) or
   * through a pinned host buffer, with its device current meanwhile. */
  void *buf = w->tensors[0].data;
#ifdef EVMPI_HAVE_CUDA
  int saved_device = -1;
  if (w->device.type == EVMPI_DEVICE_CUDA &&
      (rc = evmpi__cuda_p2p_enter(w, &buf, &saved_device)) != EVMPI_OK) {
    evmpi__work_discard(w);
    return rc;
  }
#endif
  /* Counts beyond INT_MAX travel as one element of a derived type, which
   * MPI lets us free as soon as the request is posted. */
  evmpi_block_t b;
  const char *call = "MPI_Type_create_struct";
  rc = evmpi__block_make(numel, a->tensor->dtype, &b);
  if (rc == MPI_SUCCESS) {
    call = a->op->mpi_call;
    if (a->op->kind == EVMPI_WORK_SEND)
      rc = MPI_Isend(buf, b.count, b.type, a->peer, a->tag, pg->comm, &w->request);
    else
      rc = MPI_Irecv(buf, b.count, b.type, a->peer, a->tag, pg->comm, &w->request);
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
    evmpi__work_discard(w);
    return evmpi__fail(EVMPI_ERR_MPI, "%s: %s failed: %s", a->op->opname, call, text);
  }
  w->t_started = evmpi__now_ns();
  rc = evmpi__poller_submit(&pg->poller, w);
  if (rc != EVMPI_OK) {
    /* The request was cancelled and freed; a freed send may still be read
     * by MPI, so a staged pinned buffer is left to the process. */
    evmpi__work_discard(w);
    return rc;
  }
  return EVMPI_OK;
}

int evmpi_send(evmpi_pg_t *pg, const evmpi_tensor_t *tensor, int dst, int tag, evmpi_work_t **work) {
  p2p_args_t a = {&evmpi__ops[EVMPI_OP_SEND], tensor, dst, false, tag};
  return submit_p2p(pg, &a, work);
}

int evmpi_recv(evmpi_pg_t *pg, evmpi_tensor_t *tensor, int src, int tag, evmpi_work_t **work) {
  p2p_args_t a = {&evmpi__ops[EVMPI_OP_RECV], tensor, src, false, tag};
  return submit_p2p(pg, &a, work);
}

int evmpi_recv_anysource(evmpi_pg_t *pg, evmpi_tensor_t *tensor, int tag, evmpi_work_t **work) {
  p2p_args_t a = {&evmpi__ops[EVMPI_OP_RECV_ANYSOURCE], tensor, MPI_ANY_SOURCE, true, tag};
  return submit_p2p(pg, &a, work);
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
