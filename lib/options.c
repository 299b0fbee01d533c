/* options.c: every tunable of a group, in one table (UCC's way: name,
 * default, range, doc, offset, type), the options object that sets them
 * in code, and their resolution at creation: defaults, then the options,
 * then the environment, unless the options say to ignore it. Each
 * variable is parsed by one of env.c's two parsers and checked by its row,
 * so a value means the same in code, in the environment and in
 * doc/settings.md, which test_options checks against this table. */
#include "options-internal.h"
#include "env-internal.h"
#include "status-internal.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum kind { SIZE_POW2, SIZE, DURATION, CHOICE, PATH };

enum {
  CUDA_ONLY = 1,    /* read only by a build with CUDA (as before the table) */
  LENIENT = 2,      /* an unknown value in the environment is the default */
  PROCESS_WIDE = 4, /* one value per process, not per group */
};

typedef struct {
  const char *text;
  int64_t value;
} choice_t;

typedef struct {
  const char *name;   /* the environment variable */
  const char *setter; /* the evmpi_pg_options_set_* function */
  enum kind kind;
  int64_t def, min, max;
  const char *unit;           /* DURATION: "microseconds", "milliseconds" */
  const choice_t *choices;    /* CHOICE: {NULL} ended */
  const char *choice_text;    /* CHOICE: "auto, 0 or 1" */
  unsigned flags;
  size_t offset;              /* in evmpi_settings_t */
  const char *doc;
} row_t;

#define OFF(f) offsetof(evmpi_settings_t, f)
#define GIB ((int64_t)1 << 30)

static const choice_t debug_choices[] = {{"off", 0}, {"detail", 1}, {NULL, 0}};
static const choice_t aware_choices[] = {{"auto", 2}, {"0", 0}, {"1", 1}, {NULL, 0}};
static const choice_t bool_choices[] = {{"0", 0}, {"1", 1}, {NULL, 0}};

/* In the order of the EVMPI_SETTING_* indices (options-internal.h). */
static const row_t table[EVMPI_NSETTINGS] = {
    [EVMPI_SETTING_TIMEOUT] = {"EVMPI_TIMEOUT_MS", "timeout_ms", DURATION, 0, 0, INT_MAX,
                               "milliseconds", NULL, NULL, 0, OFF(timeout_ms),
                               "The group's operation timeout, as evmpi_pg_set_timeout sets "
                               "it at creation; 0 = no limit."},
    [EVMPI_SETTING_DEBUG] = {"EVMPI_DEBUG", "debug", CHOICE, 0, 0, 1, NULL, debug_choices,
                             "off or detail", LENIENT, OFF(debug),
                             "detail: before each collective the ranks compare what they "
                             "call and fail a mismatch with EVMPI_ERR_INVALID. Every rank of "
                             "the group needs the same value. In the environment any other "
                             "value is off."},
    [EVMPI_SETTING_TIMELINE] = {"EVMPI_TIMELINE", "timeline", PATH, 0, 0, 4095, NULL, NULL,
                                NULL, PROCESS_WIDE, OFF(timeline),
                                "A Chrome trace of the group's operations, one file per "
                                "rank: %r in it becomes the world rank, or the rank and "
                                ".json are appended (trace.3.json). One file per process: the first group created "
                                "with a path opens it, later groups with one write to it."},
    [EVMPI_SETTING_PIECE] = {"EVMPI_PIECE", "piece_bytes", SIZE_POW2, (int64_t)1 << 20, 16, GIB,
                             NULL, NULL, NULL, 0, OFF(piece_bytes),
                             "Allreduces and reduces larger than 4 pieces go to MPI in "
                             "pieces of this many bytes (of 4, up to 16 pieces, while no rank has "
                             "sends or receives on the group), broadcasts in pieces of 4. A power "
                             "of two; the same on every rank of the group."},
    [EVMPI_SETTING_LOOP_P2P_POLL] = {"EVMPI_LOOP_P2P_POLL_US", "loop_p2p_poll_us", DURATION,
                                     2000, 0, 1000000, "microseconds", NULL, NULL, 0,
                                     OFF(loop_p2p_poll_us),
                                     "How long the loop thread goes on polling for sends and "
                                     "receives after a completion while they complete in a "
                                     "stream (the last two came within this of each other); "
                                     "at most 200 microseconds after one that came alone."},
    [EVMPI_SETTING_LOOP_HOLD] = {"EVMPI_LOOP_HOLD_US", "loop_hold_us", DURATION, 500, 1, 1000000,
                                 "microseconds", NULL, NULL, 0, OFF(loop_hold_us),
                                 "The most one wake-up of the group holds the loop before "
                                 "the loop's other events run."},
    [EVMPI_SETTING_CUDA_AWARE] = {"EVMPI_CUDA_AWARE", "cuda_aware", CHOICE, 2, 0, 2, NULL,
                                  aware_choices, "auto, 0 or 1", CUDA_ONLY, OFF(cuda_aware),
                                  "auto asks the MPI whether it takes device pointers; 1 "
                                  "trusts that it does; 0 stages device tensors through host "
                                  "memory even where it would."},
    [EVMPI_SETTING_CUDA_STAGING] = {"EVMPI_CUDA_STAGING", "cuda_staging", CHOICE, 1, 0, 1, NULL,
                                    bool_choices, "0 or 1", CUDA_ONLY, OFF(cuda_staging),
                                    "0 refuses device tensors where the MPI is not "
                                    "CUDA-aware, as PyTorch's MPI backend does; 1 stages "
                                    "them."},
    [EVMPI_SETTING_CUDA_CHUNK] = {"EVMPI_CUDA_CHUNK", "cuda_chunk", SIZE_POW2, (int64_t)4 << 20,
                                  16, GIB, NULL, NULL, NULL, CUDA_ONLY, OFF(cuda_chunk),
                                  "Bytes per pipeline chunk of a staged allreduce, reduce or "
                                  "broadcast; raised to 4 pieces when smaller."},
    [EVMPI_SETTING_EXIT_WAIT] = {"EVMPI_EXIT_WAIT_MS", "exit_wait_ms", DURATION, 5000, 0,
                                 3600000, "milliseconds", NULL, NULL, PROCESS_WIDE,
                                 OFF(exit_wait_ms),
                                 "How long MPI_Finalize waits in all for live groups to stop "
                                 "and deferred teardowns to end. One value per process: the "
                                 "last group created with it set gives it."},
    [EVMPI_SETTING_ARRIVAL_GATE] = {"EVMPI_ARRIVAL_GATE", "arrival_gate", CHOICE, 1, 0, 1, NULL,
                                    bool_choices, "0 or 1", 0, OFF(arrival_gate),
                                    "1: before a blocking collective the ranks meet at a "
                                    "nonblocking gate, waited for with back-off, so a "
                                    "collective waiting for a late peer costs no CPU; it adds "
                                    "a few microseconds to each small collective run one at a "
                                    "time. 0: no gate, the lowest latency, and a waiting "
                                    "collective spins in MPI. The same on every rank of the "
                                    "group."},
    [EVMPI_SETTING_P2P_IDLE_POLL] = {"EVMPI_P2P_IDLE_POLL_MS", "p2p_idle_poll_ms", DURATION, 20,
                                     1, 1000, "milliseconds", NULL, NULL, 0,
                                     OFF(p2p_idle_poll_ms),
                                     "The longest the poller sleeps between tests of sends and "
                                     "receives that nothing has happened to for a while: a "
                                     "receive left posted costs a wake-up (two tests) this "
                                     "often, and a message that ends a quiet spell is seen at "
                                     "most this late (after a shorter spell, within an eighth "
                                     "of it)."},
    [EVMPI_SETTING_LOOP_COLLECTIVES] = {"EVMPI_LOOP_COLLECTIVES", "loop_collectives", CHOICE, 1, 0,
                                        1, NULL, bool_choices, "0 or 1", 0,
                                        OFF(loop_collectives),
                                        "1: a collective of at most 64 KiB on host memory that "
                                        "a callback submits while the worker is idle runs on "
                                        "the loop thread once every rank has reached its "
                                        "arrival gate, with no hand-off to the worker and back; "
                                        "the loop is held for the blocking call. 0: every "
                                        "collective runs on the worker. Each rank may choose "
                                        "its own."},
    [EVMPI_SETTING_COLL_IDLE_POLL] = {"EVMPI_COLL_IDLE_POLL_US", "coll_idle_poll_us", DURATION,
                                      1000, 1, 1000000, "microseconds", NULL, NULL, 0,
                                      OFF(coll_idle_poll_us),
                                      "The longest a collective waiting at its arrival gate "
                                      "for a late peer sleeps between tests: a collective "
                                      "left waiting costs a wake-up (two tests) this often, "
                                      "and completes at most about this late after the last "
                                      "peer arrives (after a shorter wait, within an eighth "
                                      "of it). Each rank may choose its own."},
    [EVMPI_SETTING_COLL_FUSE] = {"EVMPI_COLL_FUSE_BYTES", "coll_fuse_bytes", SIZE, 64 << 10, 0,
                                 16 << 20, NULL, NULL, NULL, 0, OFF(coll_fuse_bytes),
                                 "Allreduces queued back to back with one dtype and op, which "
                                 "every rank holds (the last arrival gate says so), run as "
                                 "one MPI_Allreduce of at most this many bytes, packed into "
                                 "a buffer of the worker's: a burst of small allreduces costs "
                                 "MPI one call per set, not one per tensor. A float sum may "
                                 "then differ in its last bits from the same allreduce run "
                                 "alone (it is the same on every rank). Needs the arrival "
                                 "gate, in groups of two ranks or more. 0: never fused. The "
                                 "same on every rank of the group."},
};

struct evmpi_pg_options {
  evmpi_settings_t values; /* explicit_mask: the rows set in code */
  bool ignore_env;
  evmpi_loop_t loop;
};

static int64_t *field(evmpi_settings_t *s, const row_t *r) {
  return (int64_t *)((char *)s + r->offset);
}
static int64_t get_field(const evmpi_settings_t *s, const row_t *r) {
  return *(const int64_t *)((const char *)s + r->offset);
}

static bool pow2_in(int64_t v, int64_t lo, int64_t hi) {
  return v >= lo && v <= hi && (v & (v - 1)) == 0;
}

/* Whether v is a value row r allows (numbers and choices). */
static bool in_range(const row_t *r, int64_t v) {
  switch (r->kind) {
  case SIZE_POW2: return pow2_in(v, r->min, r->max);
  case SIZE:
  case DURATION: return v >= r->min && v <= r->max;
  case CHOICE:
    for (const choice_t *c = r->choices; c->text; c++)
      if (c->value == v)
        return true;
    return false;
  case PATH: break;
  }
  return false;
}

/* "a power of two from 16 to 1073741824 bytes (K, M and G suffixes
 * allowed)": what a value of the row must be, into buf. */
static const char *range_text(const row_t *r, char *buf, size_t len) {
  switch (r->kind) {
  case SIZE_POW2:
    snprintf(buf, len, "a power of two from %" PRId64 " to %" PRId64 " bytes (K, M and G "
             "suffixes allowed)", r->min, r->max);
    break;
  case SIZE:
    snprintf(buf, len, "a number of bytes from %" PRId64 " to %" PRId64 " (K, M and G "
             "suffixes allowed)", r->min, r->max);
    break;
  case DURATION:
    snprintf(buf, len, "a number of %s in %" PRId64 "..%" PRId64, r->unit, r->min, r->max);
    break;
  case CHOICE: snprintf(buf, len, "%s", r->choice_text); break;
  case PATH: snprintf(buf, len, "a path of at most %" PRId64 " bytes", r->max); break;
  }
  return buf;
}

/* Parses text as row r's variable. strict: an unknown CHOICE fails even
 * for a LENIENT row (code says what it means; the environment may hold
 * other programs' values). */
static int parse_text(const char *op, const row_t *r, const char *text, bool strict,
                      evmpi_settings_t *s) {
  uint64_t v = 0;
  bool ok = false;
  switch (r->kind) {
  case SIZE_POW2:
  case SIZE: ok = evmpi__parse_size(text, (uint64_t)r->max, &v) && in_range(r, (int64_t)v); break;
  case DURATION: ok = evmpi__parse_duration(text, (uint64_t)r->max, &v) && (int64_t)v >= r->min; break;
  case CHOICE:
    for (const choice_t *c = r->choices; c->text && !ok; c++)
      if (strcmp(c->text, text) == 0)
        ok = true, v = (uint64_t)c->value;
    if (!ok && !strict && (r->flags & LENIENT))
      ok = true, v = (uint64_t)r->def;
    break;
  case PATH:
    if (strlen(text) <= (size_t)r->max) {
      snprintf(s->timeline, sizeof s->timeline, "%s", text);
      s->explicit_mask |= 1u << (r - table);
      return EVMPI_OK;
    }
    break;
  }
  if (!ok) {
    char why[128];
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s=%s is not %s", op, r->name, text,
                       range_text(r, why, sizeof why));
  }
  *field(s, r) = (int64_t)v;
  s->explicit_mask |= 1u << (r - table);
  return EVMPI_OK;
}

static void set_defaults(evmpi_settings_t *s) {
  memset(s, 0, sizeof *s);
  for (int i = 0; i < EVMPI_NSETTINGS; i++)
    if (table[i].kind != PATH)
      *field(s, &table[i]) = table[i].def;
}

int evmpi__settings_resolve(const char *op, const evmpi_pg_options_t *opts,
                            evmpi_settings_t *s) {
  if (opts)
    *s = opts->values;
  else
    set_defaults(s);
  if (opts && opts->ignore_env)
    return EVMPI_OK;
  for (int i = 0; i < EVMPI_NSETTINGS; i++) {
    const row_t *r = &table[i];
#ifndef EVMPI_HAVE_CUDA
    if (r->flags & CUDA_ONLY)
      continue; /* nothing reads it */
#endif
    const char *v = evmpi__env_get(r->name);
    if (v) {
      int rc = parse_text(op, r, v, false, s);
      if (rc != EVMPI_OK)
        return rc;
    }
  }
  return EVMPI_OK;
}

static void format_value(const row_t *r, int64_t v, const char *path, char *buf, size_t len) {
  if (r->kind == PATH) {
    snprintf(buf, len, "%s", path);
    return;
  }
  if (r->kind == CHOICE)
    for (const choice_t *c = r->choices; c->text; c++)
      if (c->value == v) {
        snprintf(buf, len, "%s", c->text);
        return;
      }
  snprintf(buf, len, "%" PRId64, v);
}

void evmpi__settings_format(const evmpi_settings_t *s, int i, char *buf, size_t len) {
  format_value(&table[i], get_field(s, &table[i]), s->timeline, buf, len);
}

static int find(const char *op, const char *name) {
  if (!name) {
    evmpi__fail(EVMPI_ERR_INVALID, "%s: name is NULL", op);
    return -1;
  }
  for (int i = 0; i < EVMPI_NSETTINGS; i++)
    if (strcmp(table[i].name, name) == 0)
      return i;
  evmpi__fail(EVMPI_ERR_INVALID, "%s: %s is not an evmpi setting (doc/settings.md lists them)",
              op, name);
  return -1;
}

/* ---- the public options object ------------------------------------------ */

int evmpi_pg_options_new(evmpi_pg_options_t **opts) {
  if (!opts)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_options_new: opts is NULL");
  *opts = calloc(1, sizeof **opts);
  if (!*opts)
    return evmpi__fail(EVMPI_ERR_NOMEM, "pg_options_new: out of memory");
  set_defaults(&(*opts)->values);
  (*opts)->loop = EVMPI_LOOP_DEFAULT;
  return EVMPI_OK;
}

void evmpi_pg_options_free(evmpi_pg_options_t *opts) { free(opts); }

/* The typed setters: v checked against row i's range. */
static int set_number(evmpi_pg_options_t *o, int i, int64_t v) {
  const row_t *r = &table[i];
  char op[64];
  snprintf(op, sizeof op, "pg_options_set_%s", r->setter);
  if (!o)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: opts is NULL", op);
  if (!in_range(r, v)) {
    char why[128];
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %" PRId64 " is not %s (%s)", op, v,
                       range_text(r, why, sizeof why), r->name);
  }
  *field(&o->values, r) = v;
  o->values.explicit_mask |= 1u << i;
  return EVMPI_OK;
}

/* Sizes beyond INT64_MAX are out of every range: clamp, then refuse. */
static int64_t from_size(size_t v) { return v > (size_t)INT64_MAX ? INT64_MAX : (int64_t)v; }

int evmpi_pg_options_set_timeout_ms(evmpi_pg_options_t *o, int64_t ms) {
  return set_number(o, EVMPI_SETTING_TIMEOUT, ms);
}
int evmpi_pg_options_set_arrival_gate(evmpi_pg_options_t *o, int on) {
  return set_number(o, EVMPI_SETTING_ARRIVAL_GATE, (int64_t)on);
}

int evmpi_pg_options_set_loop_collectives(evmpi_pg_options_t *o, int on) {
  return set_number(o, EVMPI_SETTING_LOOP_COLLECTIVES, (int64_t)on);
}
int evmpi_pg_options_set_p2p_idle_poll_ms(evmpi_pg_options_t *o, int64_t ms) {
  return set_number(o, EVMPI_SETTING_P2P_IDLE_POLL, ms);
}
int evmpi_pg_options_set_coll_idle_poll_us(evmpi_pg_options_t *o, int64_t us) {
  return set_number(o, EVMPI_SETTING_COLL_IDLE_POLL, us);
}
int evmpi_pg_options_set_coll_fuse_bytes(evmpi_pg_options_t *o, size_t bytes) {
  return set_number(o, EVMPI_SETTING_COLL_FUSE, from_size(bytes));
}
int evmpi_pg_options_set_debug(evmpi_pg_options_t *o, evmpi_debug_t level) {
  return set_number(o, EVMPI_SETTING_DEBUG, (int64_t)level);
}
int evmpi_pg_options_set_piece_bytes(evmpi_pg_options_t *o, size_t bytes) {
  return set_number(o, EVMPI_SETTING_PIECE, from_size(bytes));
}
int evmpi_pg_options_set_loop_p2p_poll_us(evmpi_pg_options_t *o, int64_t us) {
  return set_number(o, EVMPI_SETTING_LOOP_P2P_POLL, us);
}
int evmpi_pg_options_set_loop_hold_us(evmpi_pg_options_t *o, int64_t us) {
  return set_number(o, EVMPI_SETTING_LOOP_HOLD, us);
}
int evmpi_pg_options_set_cuda_aware(evmpi_pg_options_t *o, evmpi_cuda_aware_t aware) {
  return set_number(o, EVMPI_SETTING_CUDA_AWARE, (int64_t)aware);
}
int evmpi_pg_options_set_cuda_staging(evmpi_pg_options_t *o, bool staging) {
  return set_number(o, EVMPI_SETTING_CUDA_STAGING, staging ? 1 : 0);
}
int evmpi_pg_options_set_cuda_chunk(evmpi_pg_options_t *o, size_t bytes) {
  return set_number(o, EVMPI_SETTING_CUDA_CHUNK, from_size(bytes));
}
int evmpi_pg_options_set_exit_wait_ms(evmpi_pg_options_t *o, int64_t ms) {
  return set_number(o, EVMPI_SETTING_EXIT_WAIT, ms);
}

int evmpi_pg_options_set_timeline(evmpi_pg_options_t *o, const char *path) {
  if (!o)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_options_set_timeline: opts is NULL");
  const row_t *r = &table[EVMPI_SETTING_TIMELINE];
  if (path && strlen(path) > (size_t)r->max)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_options_set_timeline: the path is longer than "
                       "%" PRId64 " bytes (EVMPI_TIMELINE)", r->max);
  snprintf(o->values.timeline, sizeof o->values.timeline, "%s", path ? path : "");
  o->values.explicit_mask |= 1u << EVMPI_SETTING_TIMELINE;
  return EVMPI_OK;
}

int evmpi_pg_options_set_ignore_env(evmpi_pg_options_t *o, bool ignore) {
  if (!o)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_options_set_ignore_env: opts is NULL");
  o->ignore_env = ignore;
  return EVMPI_OK;
}

int evmpi_pg_options_set_loop(evmpi_pg_options_t *o, evmpi_loop_t loop) {
  if (!o)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_options_set_loop: opts is NULL");
  if (loop != EVMPI_LOOP_DEFAULT && loop != EVMPI_LOOP_EXTERNAL)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_options_set_loop: %d is not an evmpi_loop_t",
                       (int)loop);
  o->loop = loop;
  return EVMPI_OK;
}

int evmpi_pg_options_set(evmpi_pg_options_t *o, const char *name, const char *value) {
  if (!o)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_options_set: opts is NULL");
  int i = find("pg_options_set", name);
  if (i < 0)
    return EVMPI_ERR_INVALID;
  if (!value)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_options_set: value of %s is NULL", name);
  if (!*value && table[i].kind != PATH)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_options_set: %s= is not %s", name,
                       range_text(&table[i], (char[128]){0}, 128));
  evmpi_settings_t s = o->values;
  int rc = parse_text("pg_options_set", &table[i], value, true, &s);
  if (rc == EVMPI_OK)
    o->values = s;
  return rc;
}

int evmpi_pg_options_get(const evmpi_pg_options_t *o, const char *name, char *buf, size_t len) {
  if (!o || !buf || len == 0)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_options_get: %s is NULL or empty",
                       !o ? "opts" : "buf");
  int i = find("pg_options_get", name);
  if (i < 0)
    return EVMPI_ERR_INVALID;
  evmpi__settings_format(&o->values, i, buf, len);
  return EVMPI_OK;
}

bool evmpi__options_ignore_env(const evmpi_pg_options_t *o) { return o && o->ignore_env; }
evmpi_loop_t evmpi__options_loop(const evmpi_pg_options_t *o) {
  return o ? o->loop : EVMPI_LOOP_DEFAULT;
}

int evmpi__settings_index(const char *op, const char *name) { return find(op, name); }

/* ---- the table, for documentation -------------------------------------- */

size_t evmpi_settings_count(void) { return EVMPI_NSETTINGS; }

int evmpi_setting_info(size_t i, evmpi_setting_info_t *info) {
  if (!info)
    return evmpi__fail(EVMPI_ERR_INVALID, "setting_info: info is NULL");
  if (i >= EVMPI_NSETTINGS)
    return evmpi__fail(EVMPI_ERR_INVALID, "setting_info: index %zu is outside 0..%d", i,
                       EVMPI_NSETTINGS - 1);
  /* Static text, so that the caller owns nothing: one buffer per row. */
  static _Thread_local char defs[EVMPI_NSETTINGS][32], ranges[EVMPI_NSETTINGS][128];
  static _Thread_local char setters[EVMPI_NSETTINGS][64];
  const row_t *r = &table[i];
  format_value(r, r->def, "", defs[i], sizeof defs[i]);
  range_text(r, ranges[i], sizeof ranges[i]);
  snprintf(setters[i], sizeof setters[i], "evmpi_pg_options_set_%s", r->setter);
  info->name = r->name;
  info->setter = setters[i];
  info->default_value = defs[i];
  info->range = ranges[i];
  info->doc = r->doc;
  info->process_wide = (r->flags & PROCESS_WIDE) != 0;
  info->cuda_only = (r->flags & CUDA_ONLY) != 0;
  return EVMPI_OK;
}
