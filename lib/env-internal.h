/*
 * env-internal.h: the one reader of the environment, and its parsers.
 * Private to lib/; names with a double underscore are hidden from the shared
 * library.
 */
#ifndef EVMPI_ENV_INTERNAL_H
#define EVMPI_ENV_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

/* The value of variable name, or NULL when unset or empty. Every variable
 * evmpi reads goes through here (and through the table in options.c). */
const char *evmpi__env_get(const char *name);
/* Bytes with an optional K, M or G suffix (powers of 1024); false when
 * malformed or larger than max. */
bool evmpi__parse_size(const char *s, uint64_t max, uint64_t *out);
/* A duration: a plain decimal integer, counted in the unit its variable
 * names (_US, _MS); false when malformed or larger than max. */
bool evmpi__parse_duration(const char *s, uint64_t max, uint64_t *out);

#endif /* EVMPI_ENV_INTERNAL_H */
