/* debug.c: EVMPI_DEBUG=detail. Before each collective, every rank shares
 * what it is about to call (operation, dtype, element count, root, reduce
 * op) with one MPI_Allgather on the group's internal communicator. A
 * mismatch fails the work on every rank with a message that lists what
 * each rank called, instead of a hang or corrupt data. It costs one small
 * allgather per collective; every rank must run with the same setting. */
#include "debug-internal.h"
#include "dtype_mpi-internal.h"
#include "pg-internal.h"
#include "work-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether any group of the process has EVMPI_DEBUG=detail (its
 * settings, options.c): a worker asks once as it starts (worker.c), and a
 * process that never turns it on pays nothing per collective. */
static atomic_bool any_detail;

void evmpi__debug_enable(void) { atomic_store(&any_detail, true); }

bool evmpi__debug_detail(void) { return atomic_load(&any_detail); }

/* What one rank is about to call. The operation's name travels with its
 * id, so that a report names what another rank called without a table
 * of names here. */
typedef struct {
  int32_t id, dtype, root, op;
  int64_t numel;
  uint64_t seq;
  char opname[32];
} sig_t;

/* The work's signature: its first tensor's dtype (all of an operation's
 * tensors share it), its element count, its root and reduce op where the
 * operation takes them; -1 for what is not compared. */
static sig_t sign(const evmpi_work_t *w) {
  const evmpi_op_t *op = w->op;
  sig_t s = {(int32_t)op->id, -1, -1, -1, w->numel, w->seq, ""};
  if (w->ntensors > 0)
    s.dtype = (int32_t)w->tensors[0].dtype;
  if (op->flags & EVMPI_OPF_ROOTED)
    s.root = w->args.coll.root;
  if (op->flags & EVMPI_OPF_REDUCES)
    s.op = (int32_t)w->args.coll.op;
  snprintf(s.opname, sizeof s.opname, "%s", op->opname);
  return s;
}

static bool same(const sig_t *a, const sig_t *b) {
  return a->id == b->id && a->dtype == b->dtype && a->root == b->root && a->op == b->op &&
         a->numel == b->numel;
}

/* "allreduce(float32, 4 elements, op sum)" */
static int describe(char *buf, size_t len, const sig_t *s) {
  int n = snprintf(buf, len, "%.*s(", (int)sizeof s->opname, s->opname);
  const char *sep = "";
  if (s->dtype >= 0) {
    n += snprintf(buf + n, len > (size_t)n ? len - (size_t)n : 0, "%s",
                  evmpi__dtype_name((evmpi_dtype_t)s->dtype));
    sep = ", ";
  }
  if (s->numel >= 0) {
    n += snprintf(buf + n, len > (size_t)n ? len - (size_t)n : 0, "%s%lld elements", sep,
                  (long long)s->numel);
    sep = ", ";
  }
  if (s->root >= 0) {
    n += snprintf(buf + n, len > (size_t)n ? len - (size_t)n : 0, "%sroot %d", sep, s->root);
    sep = ", ";
  }
  if (s->op >= 0)
    n += snprintf(buf + n, len > (size_t)n ? len - (size_t)n : 0, "%sop %s", sep,
                  evmpi__reduce_op_name((evmpi_reduce_op_t)s->op));
  n += snprintf(buf + n, len > (size_t)n ? len - (size_t)n : 0, ")");
  return n;
}

int evmpi__debug_check(evmpi_work_t *w) {
  if (!w->pg->settings.debug)
    return EVMPI_OK; /* another group of the process has it on */
  int size = w->pg->size;
  sig_t mine = sign(w);
  sig_t *all = malloc((size_t)size * sizeof *all);
  if (!all)
    return evmpi__work_fail(w, EVMPI_ERR_NOMEM, "EVMPI_DEBUG=detail: out of memory");
  int rc = MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE,
                         w->pg->internal);
  if (rc != MPI_SUCCESS) {
    free(all);
    return evmpi__work_mpi_error(w, "MPI_Allgather (EVMPI_DEBUG=detail)", rc);
  }
  bool match = true;
  for (int r = 0; r < size; r++)
    match = match && same(&all[r], &mine);
  if (match) {
    free(all);
    return EVMPI_OK;
  }
  size_t len = 96 + (size_t)size * 128;
  char *text = malloc(len);
  if (text) {
    int n = snprintf(text, len, "mismatched collectives across ranks (#%llu):",
                     (unsigned long long)w->seq);
    for (int r = 0; r < size && (size_t)n < len; r++) {
      n += snprintf(text + n, len - (size_t)n, "%s rank %d called ", r ? ";" : "", r);
      if ((size_t)n < len)
        n += describe(text + n, len - (size_t)n, &all[r]);
    }
  }
  evmpi__work_fail(w, EVMPI_ERR_INVALID, "%s", text ? text : "mismatched collectives");
  free(text);
  free(all);
  return EVMPI_ERR_INVALID;
}
