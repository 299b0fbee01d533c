/*
 * timeline-internal.h: EVMPI_TIMELINE=path: a Chrome trace per rank. Private
 * to lib/; names with a double underscore are hidden from the shared
 * library.
 */
#ifndef EVMPI_TIMELINE_INTERNAL_H
#define EVMPI_TIMELINE_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

/* Opens the process's trace file at path, unless one is open already
 * (the first group with a path opens it); on failure says so on stderr. */
void evmpi__timeline_open(const char *path);
/* Records w when its group was created with a timeline. */
void evmpi__timeline_record(const evmpi_work_t *w, int status);
/* Writes out what is buffered (at group destroy). */
void evmpi__timeline_flush(void);

#endif /* EVMPI_TIMELINE_INTERNAL_H */
