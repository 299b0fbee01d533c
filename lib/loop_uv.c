/* loop_uv.c: the libuv adapter, on the public core only (evmpi_pg_fd,
 * evmpi_pg_dispatch, evmpi_pg_set_detach): a uv_poll_t on the group's fd
 * whose callback dispatches, stopped and closed by the detach callback
 * before the teardown closes the fd (libuv must stop polling an fd before
 * it is closed). Built when configure finds libuv. */
#include "status-internal.h"

#include "evmpi/uv.h"

#include <stdlib.h>

typedef struct {
  uv_poll_t poll;
  evmpi_pg_t *pg;
} watcher_t;

static void on_closed(uv_handle_t *h) { free(h->data); }

static void on_readable(uv_poll_t *poll, int status, int events) {
  (void)status, (void)events; /* an eventfd does not fail: dispatch anyway */
  watcher_t *w = poll->data;
  /* w may be closing when this returns (a callback destroyed the group);
   * libuv frees it on a later turn (on_closed). */
  evmpi_pg_dispatch(w->pg);
}

static void on_detach(evmpi_pg_t *pg, void *arg) {
  (void)pg;
  watcher_t *w = arg;
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t *)&w->poll, on_closed);
}

int evmpi_uv_attach(evmpi_pg_t *pg, uv_loop_t *loop) {
  if (!pg || !loop)
    return evmpi__fail(EVMPI_ERR_INVALID, "uv_attach: %s is NULL", !pg ? "pg" : "loop");
  int fd = evmpi_pg_fd(pg);
  if (fd < 0)
    return fd;
  watcher_t *w = calloc(1, sizeof *w);
  if (!w)
    return evmpi__fail(EVMPI_ERR_NOMEM, "uv_attach: out of memory");
  w->pg = pg;
  /* Claimed first: a group of another loop, or one attached already, is
   * refused before libuv sees the fd. */
  int rc = evmpi_pg_set_detach(pg, on_detach, w);
  if (rc != EVMPI_OK) {
    free(w);
    return rc;
  }
  const char *call = "uv_poll_init";
  int uv = uv_poll_init(loop, &w->poll, fd);
  if (uv == 0) {
    w->poll.data = w;
    call = "uv_poll_start";
    if ((uv = uv_poll_start(&w->poll, UV_READABLE, on_readable)) != 0)
      uv_close((uv_handle_t *)&w->poll, on_closed); /* frees w on a later turn */
  } else {
    free(w);
  }
  if (uv != 0) {
    evmpi_pg_set_detach(pg, NULL, NULL);
    return evmpi__fail(EVMPI_ERR_STATE, "uv_attach: %s failed: %s", call, uv_strerror(uv));
  }
  return EVMPI_OK;
}
