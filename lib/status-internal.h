/*
 * status-internal.h: errors as values: the thread's last-error message,
 * MPI's error texts. Private to lib/; names with a double underscore are
 * hidden from the shared library.
 */
#ifndef EVMPI_STATUS_INTERNAL_H
#define EVMPI_STATUS_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

/* Formats the thread's last-error message and returns status, so that a
 * check reads `return evmpi__fail(EVMPI_ERR_INVALID, "...", ...)`. */
int evmpi__fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A malloc'ed formatted string, or NULL when out of memory. */
char *evmpi__asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* MPI's text for an error code: "MPI_ERR_TRUNCATE: message truncated". */
void evmpi__mpi_error_text(int code, char *buf, size_t len);

#endif /* EVMPI_STATUS_INTERNAL_H */
