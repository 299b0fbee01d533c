/* cuda_stage.c: collectives on CUDA tensors, on the worker thread.
 *
 * With a CUDA-aware MPI the device pointers go straight to MPI, with the
 * tensor's device current, unless the operation's run touches the data on
 * the host itself (w->host_access: packing separate buffers, an average's
 * division, the float16/bfloat16 kernels). Otherwise the tensors are
 * staged through pinned host memory that the group owns and reuses (the
 * stager), with copies on the group's own non-blocking streams:
 *  - one-tensor element-wise collectives (allreduce, reduce, broadcast) run
 *    as a pipeline of chunks: the copy to the host of chunk i+1 and the
 *    copy back of chunk i-1 overlap MPI on chunk i, in a ring of SLOTS
 *    pinned chunk buffers;
 *  - every other collective is staged whole: each device range its tensors
 *    cover is copied to the host (inputs, and outputs the operation also
 *    reads), the operation runs on host descriptors, and the ranges holding
 *    outputs are copied back. Tensors that overlap or touch on the device
 *    keep their relative layout on the host, so in-place forms (an input
 *    that is an output's slot) and back-to-back outputs stay what they are.
 * A CUDA failure fails the work with EVMPI_ERR_CUDA on this rank; its peers
 * then wait in the collective (evmpi_pg_set_timeout bounds that). */
#include "cuda_stage-internal.h"
#include "cuda-internal.h"
#include "pg-internal.h"
#include "pieces-internal.h"
#include "work-internal.h"

#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 4
#define HOST_ALIGN 64

typedef struct {
  bool ready;
  cudaStream_t in, out;           /* device to host, host to device */
  cudaEvent_t ev_in[SLOTS];       /* a slot's chunk is on the host */
  cudaEvent_t ev_out[SLOTS];      /* a slot's chunk is back on the device */
} dev_streams_t;

/* A device range that staged tensors cover. */
typedef struct {
  char *start, *end;
  size_t host_off;
  bool in, out;
} span_t;

struct evmpi_stager {
  void *host;                     /* pinned, portable across devices */
  size_t cap;
  evmpi_tensor_t *desc;           /* host descriptors while an operation runs */
  size_t desc_cap;
  span_t *spans;
  size_t spans_cap;
  int ndev;
  dev_streams_t *dev;             /* per device index, created on first use */
};

static int cuda_fail(evmpi_work_t *w, const char *call, cudaError_t e) {
  cudaGetLastError(); /* clear a non-sticky error */
  return evmpi__work_fail(w, EVMPI_ERR_CUDA, "%s failed: %s: %s", call, cudaGetErrorName(e),
                          cudaGetErrorString(e));
}

void evmpi__stager_free(evmpi_stager_t *s) {
  if (!s)
    return;
  /* Whoever drops the group's last reference (any thread) keeps its
   * current device. */
  int saved = evmpi__cuda_current_device(), set = saved;
  for (int d = 0; d < s->ndev; d++) {
    dev_streams_t *ds = &s->dev[d];
    if (!ds->ready)
      continue;
    cudaSetDevice(d);
    set = d;
    for (int i = 0; i < SLOTS; i++) {
      cudaEventDestroy(ds->ev_in[i]);
      cudaEventDestroy(ds->ev_out[i]);
    }
    cudaStreamDestroy(ds->in);
    cudaStreamDestroy(ds->out);
  }
  evmpi__cuda_restore_device(saved, set);
  if (s->host)
    cudaFreeHost(s->host);
  free(s->dev);
  free(s->desc);
  free(s->spans);
  free(s);
}

static evmpi_stager_t *stager_of(evmpi_pg_t *pg) {
  if (!pg->stager)
    pg->stager = calloc(1, sizeof *pg->stager); /* worker thread only */
  return pg->stager;
}

/* The device's streams and events (the device is current). */
static int streams_of(evmpi_work_t *w, evmpi_stager_t *s, dev_streams_t **out) {
  int index = w->device.index;
  if (index >= s->ndev) {
    dev_streams_t *grown = realloc(s->dev, (size_t)(index + 1) * sizeof *grown);
    if (!grown)
      return evmpi__work_fail(w, EVMPI_ERR_NOMEM, "out of memory");
    memset(grown + s->ndev, 0, (size_t)(index + 1 - s->ndev) * sizeof *grown);
    s->dev = grown;
    s->ndev = index + 1;
  }
  dev_streams_t *ds = &s->dev[index];
  if (!ds->ready) {
    /* Non-blocking: no implicit synchronisation with the application's
     * work on the legacy default stream. */
    cudaError_t e = cudaStreamCreateWithFlags(&ds->in, cudaStreamNonBlocking);
    if (e != cudaSuccess)
      return cuda_fail(w, "cudaStreamCreateWithFlags", e);
    e = cudaStreamCreateWithFlags(&ds->out, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
      cudaStreamDestroy(ds->in);
      return cuda_fail(w, "cudaStreamCreateWithFlags", e);
    }
    int made = 0;
    for (; made < SLOTS && e == cudaSuccess; made++) {
      e = cudaEventCreateWithFlags(&ds->ev_in[made], cudaEventDisableTiming);
      if (e == cudaSuccess) {
        e = cudaEventCreateWithFlags(&ds->ev_out[made], cudaEventDisableTiming);
        if (e != cudaSuccess)
          cudaEventDestroy(ds->ev_in[made]);
      }
    }
    if (e != cudaSuccess) {
      for (int i = 0; i < made - 1; i++) {
        cudaEventDestroy(ds->ev_in[i]);
        cudaEventDestroy(ds->ev_out[i]);
      }
      cudaStreamDestroy(ds->in);
      cudaStreamDestroy(ds->out);
      return cuda_fail(w, "cudaEventCreateWithFlags", e);
    }
    ds->ready = true;
  }
  *out = ds;
  return EVMPI_OK;
}

/* At least bytes of pinned host memory. It only grows: pinning is slow
 * (a system call and page locking per allocation), reuse is free. */
static int reserve_host(evmpi_work_t *w, evmpi_stager_t *s, size_t bytes) {
  if (bytes <= s->cap)
    return EVMPI_OK;
  size_t want = s->cap * 2 > bytes ? s->cap * 2 : bytes;
  if (s->host)
    cudaFreeHost(s->host);
  s->host = NULL;
  s->cap = 0;
  cudaError_t e = cudaHostAlloc(&s->host, want, cudaHostAllocPortable);
  if (e != cudaSuccess && want > bytes) {
    cudaGetLastError();
    want = bytes;
    e = cudaHostAlloc(&s->host, want, cudaHostAllocPortable);
  }
  if (e != cudaSuccess) {
    s->host = NULL;
    return cuda_fail(w, "cudaHostAlloc (staging buffer)", e);
  }
  s->cap = want;
  return EVMPI_OK;
}

/* ---- one-tensor collectives, in pipelined chunks ----------------------------- */

typedef struct {
  evmpi_work_t *w;
  dev_streams_t *ds;
  char *dev, *host;
  size_t esz, slot_bytes;
  int64_t numel, per;
  int slots;
  cudaError_t e;
  const char *call;         /* the CUDA call that failed */
} pipe_t;

static bool pipe_ok(pipe_t *p, cudaError_t e, const char *call) {
  if (e != cudaSuccess && p->e == cudaSuccess) {
    p->e = e;
    p->call = call;
  }
  return p->e == cudaSuccess;
}

/* Queues chunk i into its slot: once the slot's previous chunk is back on
 * the device (ev_out), copy chunk i in (when this rank's chunks are inputs)
 * and mark the slot ready (ev_in). Nothing here waits on the host. */
static void enqueue_in(pipe_t *p, int64_t i) {
  int slot = (int)(i % p->slots);
  int64_t off = i * p->per, n = p->numel - off < p->per ? p->numel - off : p->per;
  if (i >= p->slots &&
      !pipe_ok(p, cudaStreamWaitEvent(p->ds->in, p->ds->ev_out[slot], 0), "cudaStreamWaitEvent"))
    return;
  if (p->w->chunk_in &&
      !pipe_ok(p, cudaMemcpyAsync(p->host + (size_t)slot * p->slot_bytes,
                                  p->dev + (size_t)off * p->esz, (size_t)n * p->esz,
                                  cudaMemcpyDeviceToHost, p->ds->in),
               "cudaMemcpyAsync (device to host)"))
    return;
  pipe_ok(p, cudaEventRecord(p->ds->ev_in[slot], p->ds->in), "cudaEventRecord");
}

static int run_pipelined(evmpi_work_t *w, evmpi_stager_t *s, dev_streams_t *ds) {
  const evmpi_tensor_t *t = &w->tensors[0];
  pipe_t p = {.w = w, .ds = ds, .dev = t->data, .esz = evmpi_dtype_size(t->dtype),
              .numel = w->numel, .e = cudaSuccess};
  if (p.numel == 0)
    return EVMPI_OK; /* every rank has the same count: none calls MPI */
  p.per = (int64_t)(w->pg->cuda_chunk / p.esz);
  if (p.per < 1)
    p.per = 1;
  if (p.per > p.numel)
    p.per = p.numel;
  int64_t nchunks = (p.numel + p.per - 1) / p.per;
  p.slots = nchunks < SLOTS ? (int)nchunks : SLOTS;
  p.slot_bytes = (size_t)p.per * p.esz;
  int rc = reserve_host(w, s, (size_t)p.slots * p.slot_bytes);
  if (rc != EVMPI_OK)
    return rc;
  p.host = s->host;

  for (int64_t i = 0; i < p.slots; i++)
    enqueue_in(&p, i);
  for (int64_t i = 0; i < nchunks && p.e == cudaSuccess; i++) {
    int slot = (int)(i % p.slots);
    int64_t off = i * p.per, n = p.numel - off < p.per ? p.numel - off : p.per;
    char *chunk = p.host + (size_t)slot * p.slot_bytes;
    if (!pipe_ok(&p, cudaEventSynchronize(ds->ev_in[slot]), "cudaEventSynchronize"))
      break;
    rc = evmpi__run_pieces(w, w->op->run_chunk, chunk, off, n);
    if (rc != EVMPI_OK)
      break;
    if (w->chunk_out &&
        !pipe_ok(&p, cudaMemcpyAsync(p.dev + (size_t)off * p.esz, chunk, (size_t)n * p.esz,
                                     cudaMemcpyHostToDevice, ds->out),
                 "cudaMemcpyAsync (host to device)"))
      break;
    if (!pipe_ok(&p, cudaEventRecord(ds->ev_out[slot], ds->out), "cudaEventRecord"))
      break;
    if (i + p.slots < nchunks)
      enqueue_in(&p, i + p.slots);
  }
  /* Whatever happened, nothing may still be copying when we return. */
  pipe_ok(&p, cudaStreamSynchronize(ds->out), "cudaStreamSynchronize");
  pipe_ok(&p, cudaStreamSynchronize(ds->in), "cudaStreamSynchronize");
  if (rc != EVMPI_OK)
    return rc;
  return p.e == cudaSuccess ? EVMPI_OK : cuda_fail(w, p.call, p.e);
}

/* ---- any collective, staged whole --------------------------------------------- */

static int span_cmp(const void *a, const void *b) {
  const span_t *x = a, *y = b;
  return x->start < y->start ? -1 : x->start > y->start;
}

static int grow(evmpi_work_t *w, void **arr, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap)
    return EVMPI_OK;
  void *p = realloc(*arr, need * elem);
  if (!p)
    return evmpi__work_fail(w, EVMPI_ERR_NOMEM, "out of memory");
  *arr = p;
  *cap = need;
  return EVMPI_OK;
}

/* Collects the device ranges of w's tensors, merges those that overlap and
 * lays them out in host memory; returns the host bytes needed. */
static int plan_spans(evmpi_work_t *w, evmpi_stager_t *s, size_t *nspans, size_t *host_bytes) {
  int rc = grow(w, (void **)&s->spans, &s->spans_cap, w->ntensors ? w->ntensors : 1,
                sizeof *s->spans);
  if (rc != EVMPI_OK)
    return rc;
  size_t n = 0;
  for (size_t i = 0; i < w->ntensors; i++) {
    const evmpi_tensor_t *t = &w->tensors[i];
    size_t bytes = (size_t)evmpi_tensor_numel(t) * evmpi_dtype_size(t->dtype);
    if (!t->data || bytes == 0)
      continue;
    bool output = i < w->noutputs;
    s->spans[n++] = (span_t){(char *)t->data, (char *)t->data + bytes, 0,
                             !output || w->outputs_read, output};
  }
  qsort(s->spans, n, sizeof *s->spans, span_cmp);
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    span_t *last = m ? &s->spans[m - 1] : NULL;
    if (last && s->spans[i].start < last->end) { /* overlap: one copy */
      if (s->spans[i].end > last->end)
        last->end = s->spans[i].end;
      last->in |= s->spans[i].in;
      last->out |= s->spans[i].out;
    } else {
      s->spans[m++] = s->spans[i];
    }
  }
  /* Ranges that touch stay touching on the host (back-to-back outputs);
   * the others start on a cache line. They are still copied one by one:
   * a copy must not cross from one device allocation into another. */
  size_t at = 0;
  for (size_t i = 0; i < m; i++) {
    if (i == 0 || s->spans[i].start != s->spans[i - 1].end)
      at = (at + HOST_ALIGN - 1) / HOST_ALIGN * HOST_ALIGN;
    s->spans[i].host_off = at;
    at += (size_t)(s->spans[i].end - s->spans[i].start);
  }
  *nspans = m;
  *host_bytes = at;
  return EVMPI_OK;
}

/* Where device address p lies in host memory. */
static void *host_of(evmpi_stager_t *s, size_t nspans, const void *p) {
  const char *c = p;
  for (size_t i = 0; i < nspans; i++)
    if (c >= s->spans[i].start && c < s->spans[i].end)
      return (char *)s->host + s->spans[i].host_off + (size_t)(c - s->spans[i].start);
  return NULL;
}

static int run_staged(evmpi_work_t *w, evmpi_stager_t *s, dev_streams_t *ds) {
  size_t nspans = 0, bytes = 0;
  int rc = plan_spans(w, s, &nspans, &bytes);
  if (rc == EVMPI_OK)
    rc = reserve_host(w, s, bytes);
  if (rc == EVMPI_OK)
    rc = grow(w, (void **)&s->desc, &s->desc_cap, w->ntensors ? w->ntensors : 1, sizeof *s->desc);
  if (rc != EVMPI_OK)
    return rc;
  cudaError_t e = cudaSuccess;
  for (size_t i = 0; i < nspans && e == cudaSuccess; i++)
    if (s->spans[i].in)
      e = cudaMemcpyAsync((char *)s->host + s->spans[i].host_off, s->spans[i].start,
                          (size_t)(s->spans[i].end - s->spans[i].start), cudaMemcpyDeviceToHost,
                          ds->in);
  cudaError_t e_sync = cudaStreamSynchronize(ds->in);
  if (e != cudaSuccess)
    return cuda_fail(w, "cudaMemcpyAsync (device to host)", e);
  if (e_sync != cudaSuccess)
    return cuda_fail(w, "cudaStreamSynchronize", e_sync);

  for (size_t i = 0; i < w->ntensors; i++) {
    s->desc[i] = w->tensors[i];
    void *h = w->tensors[i].data ? host_of(s, nspans, w->tensors[i].data) : NULL;
    if (h)
      s->desc[i].data = h;
    s->desc[i].device = (evmpi_device_t){EVMPI_DEVICE_CPU, 0};
  }
  /* The operation runs on host descriptors; the work's own (the result the
   * caller sees) are put back before anyone else looks (work_finish
   * publishes inline_tensors). */
  evmpi_tensor_t *user = w->tensors;
  w->tensors = s->desc;
  rc = w->op->run(w);
  w->tensors = user;
  if (rc != EVMPI_OK)
    return rc;

  for (size_t i = 0; i < nspans && e == cudaSuccess; i++)
    if (s->spans[i].out)
      e = cudaMemcpyAsync(s->spans[i].start, (char *)s->host + s->spans[i].host_off,
                          (size_t)(s->spans[i].end - s->spans[i].start), cudaMemcpyHostToDevice,
                          ds->out);
  e_sync = cudaStreamSynchronize(ds->out);
  if (e != cudaSuccess)
    return cuda_fail(w, "cudaMemcpyAsync (host to device)", e);
  if (e_sync != cudaSuccess)
    return cuda_fail(w, "cudaStreamSynchronize", e_sync);
  return EVMPI_OK;
}

/* Runs w with its device current. */
static int run_on_device(evmpi_work_t *w) {
  /* Device pointers go to a CUDA-aware MPI unless run itself touches the
   * data on the host (packing, an average's division, float16 kernels). */
  if (w->pg->cuda_path == EVMPI_CUDA_DIRECT && !w->host_access)
    return w->op->run(w);
  evmpi_stager_t *s = stager_of(w->pg);
  if (!s)
    return evmpi__work_fail(w, EVMPI_ERR_NOMEM, "out of memory");
  dev_streams_t *ds = NULL;
  int rc = streams_of(w, s, &ds);
  if (rc != EVMPI_OK)
    return rc;
  if (w->op->run_chunk && w->ntensors == 1)
    return run_pipelined(w, s, ds);
  return run_staged(w, s, ds);
}

int evmpi__cuda_run(evmpi_work_t *w) {
  /* The tensor's device is current while the work runs, and the thread's
   * own is given back after, as everywhere in cuda.c and cuda_stage.c:
   * the thread may be shared with code that relies on its device. */
  int saved = evmpi__cuda_current_device();
  cudaError_t e = cudaSetDevice(w->device.index);
  if (e != cudaSuccess)
    return cuda_fail(w, "cudaSetDevice", e);
  int rc = run_on_device(w);
  evmpi__cuda_restore_device(saved, w->device.index);
  return rc;
}
