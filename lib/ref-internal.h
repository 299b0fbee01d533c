/*
 * ref-internal.h: reference counts whose last release calls the owner's
 * free function through a pointer. Groups, works and standalone futures
 * count their references with one, so that a lower module (a future, a
 * work) can drop its reference on a higher one (a work, a group) without
 * calling into that module: the call graph of lib/ goes one way only.
 */
#ifndef EVMPI_REF_INTERNAL_H
#define EVMPI_REF_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct evmpi_ref {
  atomic_int n;
  void (*last)(struct evmpi_ref *ref); /* runs once, when n falls to zero */
} evmpi_ref_t;

static inline void evmpi__ref_init(evmpi_ref_t *r, int n, void (*last)(evmpi_ref_t *)) {
  atomic_init(&r->n, n);
  r->last = last;
}

static inline void evmpi__ref_get(evmpi_ref_t *r) {
  atomic_fetch_add_explicit(&r->n, 1, memory_order_relaxed);
}

static inline void evmpi__ref_put(evmpi_ref_t *r) {
  if (atomic_fetch_sub_explicit(&r->n, 1, memory_order_acq_rel) == 1)
    r->last(r);
}

/* The object of type T whose member m is at p. */
#define evmpi__container_of(p, T, m) ((T *)(void *)((char *)(p) - offsetof(T, m)))

#endif /* EVMPI_REF_INTERNAL_H */
