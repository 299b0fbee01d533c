/**
 * @file evmpi/uv.h
 * @brief The libuv adapter: a group's completions on a uv_loop_t.
 *
 * Part of libevmpi when configure found libuv (libuv1-dev); link with
 * libuv too. The adapter is
 * a uv_poll_t on evmpi_pg_fd that calls evmpi_pg_dispatch, so callbacks
 * run on the thread that runs the loop (uv_run).
 */
#ifndef EVMPI_UV_H
#define EVMPI_UV_H

#include <evmpi.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Runs pg's callbacks on loop: pg must have been created with a NULL
 * base and evmpi_pg_options_set_loop(opts, EVMPI_LOOP_EXTERNAL), and
 * attached once. Call it on the loop's thread; from then on that thread
 * runs the callbacks, inside uv_run. The group's handle keeps the loop
 * alive (uv_run does not return for want of handles) until the group is
 * destroyed: evmpi_pg_destroy on the loop's thread, or from one of the
 * group's callbacks, stops and closes the handle, and the loop may then
 * end. Completions that came before the call are delivered too.
 * Errors: EVMPI_ERR_INVALID (pg or loop NULL), EVMPI_ERR_STATE (pg not
 * created for an external loop, attached already, or being destroyed),
 * EVMPI_ERR_NOMEM, EVMPI_ERR_STATE when libuv refuses the fd (the
 * message names the call and libuv's error). */
EVMPI_API int evmpi_uv_attach(evmpi_pg_t *pg, uv_loop_t *loop);

#ifdef __cplusplus
}
#endif

#endif /* EVMPI_UV_H */
