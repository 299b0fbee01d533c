/*
 * options-internal.h: what one group is created with: the settings table
 * resolved. Private to lib/; names with a double underscore are hidden from
 * the shared library.
 */
#ifndef EVMPI_OPTIONS_INTERNAL_H
#define EVMPI_OPTIONS_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

/* Every tunable, resolved: the defaults, then the options set in code,
 * then the environment (unless the options ignore it). One field per row
 * of options.c's table; the row names the field by its offset. */
typedef struct evmpi_settings {
  int64_t timeout_ms;       /* EVMPI_TIMEOUT_MS: the group timeout, 0 = none */
  int64_t debug;            /* EVMPI_DEBUG: 0 off, 1 detail */
  int64_t piece_bytes;      /* EVMPI_PIECE */
  int64_t loop_p2p_poll_us; /* EVMPI_LOOP_P2P_POLL_US */
  int64_t loop_hold_us;     /* EVMPI_LOOP_HOLD_US */
  int64_t cuda_aware;       /* EVMPI_CUDA_AWARE: 0, 1, 2 = auto */
  int64_t cuda_staging;     /* EVMPI_CUDA_STAGING: 0, 1 */
  int64_t cuda_chunk;       /* EVMPI_CUDA_CHUNK */
  int64_t exit_wait_ms;     /* EVMPI_EXIT_WAIT_MS: process-wide */
  int64_t arrival_gate;     /* EVMPI_ARRIVAL_GATE: 0, 1 */
  int64_t p2p_idle_poll_ms; /* EVMPI_P2P_IDLE_POLL_MS */
  int64_t loop_collectives; /* EVMPI_LOOP_COLLECTIVES: 0, 1 */
  int64_t coll_idle_poll_us; /* EVMPI_COLL_IDLE_POLL_US */
  int64_t coll_fuse_bytes;  /* EVMPI_COLL_FUSE_BYTES: 0 = no fusion */
  char timeline[4096];      /* EVMPI_TIMELINE: "" = none */
  uint32_t explicit_mask;   /* bit per row: set in code or in the environment */
} evmpi_settings_t;

/* Row indices of the table, for explicit_mask and the getters. */
enum {
  EVMPI_SETTING_TIMEOUT, EVMPI_SETTING_DEBUG, EVMPI_SETTING_TIMELINE, EVMPI_SETTING_PIECE,
  EVMPI_SETTING_LOOP_P2P_POLL, EVMPI_SETTING_LOOP_HOLD, EVMPI_SETTING_CUDA_AWARE,
  EVMPI_SETTING_CUDA_STAGING, EVMPI_SETTING_CUDA_CHUNK, EVMPI_SETTING_EXIT_WAIT,
  EVMPI_SETTING_ARRIVAL_GATE, EVMPI_SETTING_P2P_IDLE_POLL, EVMPI_SETTING_LOOP_COLLECTIVES,
  EVMPI_SETTING_COLL_IDLE_POLL, EVMPI_SETTING_COLL_FUSE, EVMPI_NSETTINGS
};

/* Resolves opts (NULL = all defaults) and the environment into *s. A bad
 * value in the environment fails with EVMPI_ERR_INVALID, op and the
 * variable named: "pg_create: EVMPI_PIECE=24 is not a power of two ...". */
int evmpi__settings_resolve(const char *op, const struct evmpi_pg_options *opts,
                            evmpi_settings_t *s);
/* The row whose variable is name; -1 (and the last error set, naming op)
 * when there is none. */
int evmpi__settings_index(const char *op, const char *name);
bool evmpi__options_ignore_env(const struct evmpi_pg_options *opts);
evmpi_loop_t evmpi__options_loop(const struct evmpi_pg_options *opts);
/* The value of row i in s, as its variable would spell it, into buf. */
void evmpi__settings_format(const evmpi_settings_t *s, int i, char *buf, size_t len);

#endif /* EVMPI_OPTIONS_INTERNAL_H */
