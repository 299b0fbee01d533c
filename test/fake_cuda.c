/* fake_cuda.c: a simulated CUDA runtime for tests without a GPU; what it
 * simulates and why is in fake_cuda.h. Only the calls evmpi and its tests
 * make are here. */
#define _GNU_SOURCE
#include "fake_cuda.h"

#include <cuda_runtime_api.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ARENA_BYTES ((size_t)1 << 30) /* device memory, all devices together */
#define DEV_ALIGN 256
#define MAX_ALLOCS 4096

/* ---- state -------------------------------------------------------------- */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER; /* events and streams */
static int ndevices;
static unsigned delay_us;
static char *dev_view;  /* what cudaMalloc hands out: PROT_NONE unless opened */
static char *shadow;    /* the same memory, always readable and writable */
static bool init_failed;

typedef struct {
  char *p;
  size_t size;
  int device; /* -1: pinned host memory */
} alloc_t;
static alloc_t allocs[MAX_ALLOCS]; /* under mu */
static int nallocs;                 /* under mu */
static size_t bump;                 /* under mu: next free offset in the arena */

static _Thread_local int current_device;

/* Every live thread that has set a device, and its current one, so that a
 * test can see what the library's threads were left on. An entry leaves
 * with its thread (the key's destructor). */
#define MAX_THREADS 256
typedef struct {
  pthread_t tid;
  int device;
  bool used;
} thread_dev_t;
static thread_dev_t thread_devs[MAX_THREADS]; /* under mu */
static pthread_key_t thread_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static _Thread_local thread_dev_t *my_entry;
static _Thread_local cudaError_t last_error;
static atomic_int fail_copies;
static atomic_long n_d2h, n_h2d;

static void init(void) {
  const char *d = getenv("FAKE_CUDA_DEVICES");
  ndevices = d ? atoi(d) : 2;
  const char *us = getenv("FAKE_CUDA_DELAY_US");
  delay_us = us ? (unsigned)atoi(us) : 100;
  int fd = memfd_create("fake-cuda-device-memory", 0);
  if (fd < 0 || ftruncate(fd, (off_t)ARENA_BYTES) != 0) {
    init_failed = true;
    return;
  }
  dev_view = mmap(NULL, ARENA_BYTES, PROT_NONE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  shadow = mmap(NULL, ARENA_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  close(fd);
  if (dev_view == MAP_FAILED || shadow == MAP_FAILED)
    init_failed = true;
}

static cudaError_t ret(cudaError_t e) {
  if (e != cudaSuccess)
    last_error = e;
  return e;
}

static bool is_device(const void *p) {
  return dev_view && (const char *)p >= dev_view && (const char *)p < dev_view + ARENA_BYTES;
}

/* Where the copies find p's bytes. */
static void *real(const void *p) {
  return is_device(p) ? shadow + ((const char *)p - dev_view) : (void *)p;
}

/* ---- control ------------------------------------------------------------- */

void fake_cuda_host_access(bool on) {
  pthread_once(&once, init);
  if (dev_view)
    mprotect(dev_view, ARENA_BYTES, on ? PROT_READ | PROT_WRITE : PROT_NONE);
}

void fake_cuda_fail_copies(int n) { atomic_store(&fail_copies, n); }

void fake_cuda_copy_counts(long *d2h, long *h2d) {
  *d2h = atomic_load(&n_d2h);
  *h2d = atomic_load(&n_h2d);
}

int fake_cuda_live_allocations(int *pinned) {
  pthread_mutex_lock(&mu);
  int dev = 0, host = 0;
  for (int i = 0; i < nallocs; i++)
    if (allocs[i].device < 0)
      host++;
    else
      dev++;
  pthread_mutex_unlock(&mu);
  if (pinned)
    *pinned = host;
  return dev;
}

/* ---- devices and errors ------------------------------------------------- */

static void thread_gone(void *entry) {
  pthread_mutex_lock(&mu);
  ((thread_dev_t *)entry)->used = false;
  pthread_mutex_unlock(&mu);
}

static void make_key(void) { pthread_key_create(&thread_key, thread_gone); }

/* Records the calling thread's current device. */
static void note_device(int device) {
  pthread_once(&key_once, make_key);
  pthread_mutex_lock(&mu);
  if (!my_entry) {
    for (int i = 0; i < MAX_THREADS; i++)
      if (!thread_devs[i].used) {
        my_entry = &thread_devs[i];
        my_entry->used = true;
        my_entry->tid = pthread_self();
        break;
      }
    if (my_entry)
      pthread_setspecific(thread_key, my_entry);
  }
  if (my_entry)
    my_entry->device = device;
  pthread_mutex_unlock(&mu);
}

int fake_cuda_threads_on_device(int device) {
  int n = 0;
  pthread_mutex_lock(&mu);
  for (int i = 0; i < MAX_THREADS; i++)
    n += thread_devs[i].used && thread_devs[i].device == device;
  pthread_mutex_unlock(&mu);
  return n;
}

cudaError_t cudaGetDeviceCount(int *count) {
  pthread_once(&once, init);
  if (ndevices <= 0 || init_failed) {
    *count = 0;
    return ret(cudaErrorNoDevice);
  }
  *count = ndevices;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  pthread_once(&once, init);
  if (device < 0 || device >= ndevices)
    return ret(cudaErrorInvalidDevice);
  current_device = device;
  note_device(device);
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
  pthread_once(&once, init);
  if (ndevices <= 0)
    return ret(cudaErrorNoDevice);
  *device = current_device;
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

const char *cudaGetErrorName(cudaError_t e) {
  switch (e) {
  case cudaSuccess: return "cudaSuccess";
  case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
  case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
  case cudaErrorNoDevice: return "cudaErrorNoDevice";
  case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
  case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  default: return "cudaErrorUnknown";
  }
}

const char *cudaGetErrorString(cudaError_t e) {
  switch (e) {
  case cudaSuccess: return "no error";
  case cudaErrorInvalidValue: return "invalid argument";
  case cudaErrorMemoryAllocation: return "out of memory";
  case cudaErrorNoDevice: return "no CUDA-capable device is detected (simulated)";
  case cudaErrorInvalidDevice: return "invalid device ordinal";
  case cudaErrorLaunchFailure: return "unspecified launch failure (injected by the test)";
  default: return "unknown error";
  }
}

/* ---- memory ---------------------------------------------------------------- */

static cudaError_t track(char *p, size_t size, int device) {
  if (nallocs == MAX_ALLOCS)
    return cudaErrorMemoryAllocation;
  allocs[nallocs++] = (alloc_t){p, size, device};
  return cudaSuccess;
}

cudaError_t cudaMalloc(void **ptr, size_t size) {
  pthread_once(&once, init);
  if (ndevices <= 0 || init_failed)
    return ret(cudaErrorNoDevice);
  size_t rounded = (size ? size : 1) + DEV_ALIGN - 1;
  rounded -= rounded % DEV_ALIGN;
  pthread_mutex_lock(&mu);
  cudaError_t e = cudaErrorMemoryAllocation;
  if (bump + rounded <= ARENA_BYTES) {
    e = track(dev_view + bump, size, current_device);
    if (e == cudaSuccess) {
      *ptr = dev_view + bump;
      bump += rounded;
    }
  }
  pthread_mutex_unlock(&mu);
  return ret(e);
}

/* Frees the tracked allocation at p of the given kind. */
static cudaError_t untrack(void *p, bool pinned) {
  pthread_mutex_lock(&mu);
  cudaError_t e = cudaErrorInvalidValue;
  for (int i = 0; i < nallocs; i++) {
    if (allocs[i].p != p || (allocs[i].device < 0) != pinned)
      continue;
    allocs[i] = allocs[--nallocs];
    e = cudaSuccess;
    break;
  }
  bool any_device = false;
  for (int i = 0; i < nallocs; i++)
    any_device |= allocs[i].device >= 0;
  if (!pinned && e == cudaSuccess && !any_device) {
    /* Nothing lives on the devices: start the arena over, give the pages
     * back, and leave stale data nowhere. */
    madvise(shadow, bump, MADV_REMOVE);
    bump = 0;
  }
  pthread_mutex_unlock(&mu);
  return e;
}

cudaError_t cudaFree(void *p) {
  if (!p)
    return cudaSuccess;
  return ret(untrack(p, false));
}

cudaError_t cudaHostAlloc(void **ptr, size_t size, unsigned int flags) {
  (void)flags;
  void *p = NULL;
  if (posix_memalign(&p, 4096, size ? size : 1) != 0)
    return ret(cudaErrorMemoryAllocation);
  pthread_mutex_lock(&mu);
  cudaError_t e = track(p, size, -1);
  pthread_mutex_unlock(&mu);
  if (e != cudaSuccess) {
    free(p);
    return ret(e);
  }
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p) {
  if (!p)
    return cudaSuccess;
  cudaError_t e = untrack(p, true);
  if (e == cudaSuccess)
    free(p);
  return ret(e);
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *p) {
  pthread_once(&once, init);
  memset(a, 0, sizeof *a);
  a->type = cudaMemoryTypeUnregistered;
  a->device = -2;
  pthread_mutex_lock(&mu);
  for (int i = 0; i < nallocs; i++) {
    const char *c = p;
    if (c < allocs[i].p || c >= allocs[i].p + (allocs[i].size ? allocs[i].size : 1))
      continue;
    if (allocs[i].device >= 0) {
      a->type = cudaMemoryTypeDevice;
      a->device = allocs[i].device;
      a->devicePointer = (void *)p;
    } else {
      a->type = cudaMemoryTypeHost;
      a->device = current_device;
      a->hostPointer = (void *)p;
    }
    break;
  }
  pthread_mutex_unlock(&mu);
  return cudaSuccess;
}

/* ---- copies ------------------------------------------------------------------- */

/* Checks a copy against the allocations and counts it. */
static cudaError_t copy_check(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind) {
  int left = atomic_load(&fail_copies);
  while (left > 0 && !atomic_compare_exchange_weak(&fail_copies, &left, left - 1))
    ;
  if (left > 0)
    return cudaErrorLaunchFailure;
  bool ddst = is_device(dst), dsrc = is_device(src);
  if ((kind == cudaMemcpyDeviceToHost && (!dsrc || ddst)) ||
      (kind == cudaMemcpyHostToDevice && (dsrc || !ddst)) ||
      (n && (is_device((const char *)dst + n - 1) != ddst ||
             is_device((const char *)src + n - 1) != dsrc)))
    return cudaErrorInvalidValue;
  if (dsrc && !ddst)
    atomic_fetch_add(&n_d2h, 1);
  if (ddst && !dsrc)
    atomic_fetch_add(&n_h2d, 1);
  return cudaSuccess;
}

static _Thread_local long sync_h2d_here;
static atomic_int slow_next_ms;

void fake_cuda_slow_next_copy(int ms) { atomic_store(&slow_next_ms, ms); }

long fake_cuda_sync_h2d_here(void) { return sync_h2d_here; }

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind) {
  cudaError_t e = copy_check(dst, src, n, kind);
  if (e != cudaSuccess)
    return ret(e);
  if (kind == cudaMemcpyHostToDevice)
    sync_h2d_here++;
  int ms = atomic_exchange(&slow_next_ms, 0);
  if (ms > 0)
    usleep((useconds_t)ms * 1000);
  memcpy(real(dst), real(src), n);
  return cudaSuccess;
}

/* ---- streams and events ---------------------------------------------------------- */

struct CUevent_st {
  long recorded; /* under mu: records enqueued */
  long done;     /* under mu: records that have run */
};

typedef enum { OP_COPY, OP_RECORD, OP_WAIT } op_kind_t;
typedef struct op {
  op_kind_t kind;
  void *dst;
  const void *src;
  size_t n;
  struct CUevent_st *ev;
  long target;
  struct op *next;
} op_t;

struct CUstream_st {
  pthread_t thread;
  op_t *head, *tail; /* under mu */
  bool busy;         /* under mu: running an op */
  bool stop;         /* under mu */
};

static void *stream_main(void *arg) {
  struct CUstream_st *s = arg;
  pthread_mutex_lock(&mu);
  for (;;) {
    while (!s->head && !s->stop)
      pthread_cond_wait(&cv, &mu);
    if (!s->head)
      break;
    op_t *op = s->head;
    s->head = op->next;
    if (!s->head)
      s->tail = NULL;
    s->busy = true;
    if (op->kind == OP_WAIT) {
      while (op->ev->done < op->target)
        pthread_cond_wait(&cv, &mu);
    } else if (op->kind == OP_RECORD) {
      if (op->ev->done < op->target)
        op->ev->done = op->target;
    } else {
      pthread_mutex_unlock(&mu);
      if (delay_us)
        usleep(delay_us); /* the copy takes a while: an unsynchronised reader sees old data */
      memcpy(real(op->dst), real(op->src), op->n);
      pthread_mutex_lock(&mu);
    }
    s->busy = false;
    free(op);
    pthread_cond_broadcast(&cv);
  }
  pthread_mutex_unlock(&mu);
  return NULL;
}

static cudaError_t enqueue(struct CUstream_st *s, op_t *op) {
  pthread_mutex_lock(&mu);
  if (op->kind == OP_RECORD)
    op->target = ++op->ev->recorded;
  else if (op->kind == OP_WAIT)
    op->target = op->ev->recorded;
  if (s->tail)
    s->tail->next = op;
  else
    s->head = op;
  s->tail = op;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *out, unsigned int flags) {
  (void)flags;
  struct CUstream_st *s = calloc(1, sizeof *s);
  if (!s)
    return ret(cudaErrorMemoryAllocation);
  if (pthread_create(&s->thread, NULL, stream_main, s) != 0) {
    free(s);
    return ret(cudaErrorMemoryAllocation);
  }
  *out = s;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if (!s)
    return cudaSuccess; /* the legacy stream: copies on it ran at once */
  pthread_mutex_lock(&mu);
  while (s->head || s->busy)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (!s)
    return ret(cudaErrorInvalidValue);
  cudaStreamSynchronize(s);
  pthread_mutex_lock(&mu);
  s->stop = true;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  pthread_join(s->thread, NULL);
  free(s);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                            cudaStream_t s) {
  cudaError_t e = copy_check(dst, src, n, kind);
  if (e != cudaSuccess)
    return ret(e);
  if (!s) {
    memcpy(real(dst), real(src), n);
    return cudaSuccess;
  }
  op_t *op = calloc(1, sizeof *op);
  if (!op)
    return ret(cudaErrorMemoryAllocation);
  *op = (op_t){OP_COPY, dst, src, n, NULL, 0, NULL};
  return enqueue(s, op);
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *out, unsigned int flags) {
  (void)flags;
  struct CUevent_st *ev = calloc(1, sizeof *ev);
  if (!ev)
    return ret(cudaErrorMemoryAllocation);
  *out = ev;
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t ev) {
  free(ev);
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t s) {
  if (!s) {
    pthread_mutex_lock(&mu);
    ev->done = ++ev->recorded;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
  }
  op_t *op = calloc(1, sizeof *op);
  if (!op)
    return ret(cudaErrorMemoryAllocation);
  *op = (op_t){OP_RECORD, NULL, NULL, 0, ev, 0, NULL};
  return enqueue(s, op);
}

cudaError_t cudaEventSynchronize(cudaEvent_t ev) {
  pthread_mutex_lock(&mu);
  long target = ev->recorded;
  while (ev->done < target)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t ev, unsigned int flags) {
  (void)flags;
  if (!s)
    return cudaEventSynchronize(ev);
  op_t *op = calloc(1, sizeof *op);
  if (!op)
    return ret(cudaErrorMemoryAllocation);
  *op = (op_t){OP_WAIT, NULL, NULL, 0, ev, 0, NULL};
  return enqueue(s, op);
}
