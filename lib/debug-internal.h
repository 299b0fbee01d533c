/*
 * debug-internal.h: EVMPI_DEBUG=detail: mismatched collectives. Private to
 * lib/; names with a double underscore are hidden from the shared library.
 */
#ifndef EVMPI_DEBUG_INTERNAL_H
#define EVMPI_DEBUG_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

/* Whether a worker must ask evmpi__debug_check before each collective:
 * true once any group of the process was created with EVMPI_DEBUG=detail
 * (evmpi__debug_enable, before that group's worker starts). */
bool evmpi__debug_detail(void);
void evmpi__debug_enable(void);
/* Compares w's signature with every rank's (on the worker, before w
 * runs) when w's group has EVMPI_DEBUG=detail (EVMPI_OK at once
 * otherwise); on a mismatch sets w's message and returns
 * EVMPI_ERR_INVALID. */
int evmpi__debug_check(evmpi_work_t *w);

#endif /* EVMPI_DEBUG_INTERNAL_H */
