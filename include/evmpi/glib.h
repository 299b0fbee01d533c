/**
 * @file evmpi/glib.h
 * @brief The GLib adapter: a group's completions on a GMainContext.
 *
 * Part of libevmpi when configure found GLib (libglib2.0-dev); link with
 * GLib too. The adapter is
 * a GSource that watches evmpi_pg_fd and calls evmpi_pg_dispatch, so
 * callbacks run on the thread that iterates the context (g_main_loop_run,
 * g_main_context_iteration).
 */
#ifndef EVMPI_GLIB_H
#define EVMPI_GLIB_H

#include <evmpi.h>
#include <glib.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Runs pg's callbacks on context (NULL = the default main context): pg
 * must have been created with a NULL base and
 * evmpi_pg_options_set_loop(opts, EVMPI_LOOP_EXTERNAL), and attached once.
 * A GSource of default priority is added to context; when the group is
 * destroyed (evmpi_pg_destroy on the context's thread, or from one of the
 * group's callbacks) the source is destroyed with it. source_id, when not
 * NULL, receives the source's id in context (for
 * g_main_context_find_source_by_id; do not remove it yourself). Completions
 * that came before the call are delivered too. Errors: EVMPI_ERR_INVALID (pg
 * NULL), EVMPI_ERR_STATE (pg not created for an external loop, attached
 * already, or being destroyed). */
EVMPI_API int evmpi_glib_attach(evmpi_pg_t *pg, GMainContext *context, guint *source_id);

#ifdef __cplusplus
}
#endif

#endif /* EVMPI_GLIB_H */
