/* loop_glib.c: the GLib adapter, on the public core only (evmpi_pg_fd,
 * evmpi_pg_dispatch, evmpi_pg_set_detach): a GSource that watches the
 * group's fd and dispatches, destroyed by the detach callback before the
 * teardown closes the fd. Built when configure finds GLib. */
#include "status-internal.h"

#include "evmpi/glib.h"

typedef struct {
  GSource source;
  evmpi_pg_t *pg;
} evmpi_source_t;

static gboolean source_dispatch(GSource *source, GSourceFunc callback, gpointer data) {
  (void)callback, (void)data;
  /* The context holds a reference while this runs, so a destroy from a
   * callback (the detach below) leaves source valid until it returns. */
  evmpi_pg_dispatch(((evmpi_source_t *)source)->pg);
  return G_SOURCE_CONTINUE;
}

static GSourceFuncs source_funcs = {NULL, NULL, source_dispatch, NULL, NULL, NULL};

static void on_detach(evmpi_pg_t *pg, void *arg) {
  (void)pg;
  GSource *source = arg;
  g_source_destroy(source);
  g_source_unref(source);
}

int evmpi_glib_attach(evmpi_pg_t *pg, GMainContext *context, guint *source_id) {
  if (!pg)
    return evmpi__fail(EVMPI_ERR_INVALID, "glib_attach: pg is NULL");
  int fd = evmpi_pg_fd(pg);
  if (fd < 0)
    return fd;
  GSource *source = g_source_new(&source_funcs, sizeof(evmpi_source_t));
  ((evmpi_source_t *)source)->pg = pg;
  /* Claimed first: a group of another loop, or one attached already, is
   * refused before the source is added. */
  int rc = evmpi_pg_set_detach(pg, on_detach, source);
  if (rc != EVMPI_OK) {
    g_source_unref(source);
    return rc;
  }
  /* Without prepare and check, GLib dispatches the source whenever poll
   * says the fd is readable: level-triggered, as evmpi_pg_fd is. */
  g_source_add_unix_fd(source, fd, G_IO_IN);
  g_source_set_name(source, "evmpi");
  guint id = g_source_attach(source, context);
  if (source_id)
    *source_id = id;
  return EVMPI_OK;
}
