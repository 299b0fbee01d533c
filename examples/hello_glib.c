/* hello_glib.c: one allreduce, its completion delivered to a GLib main
 * loop through the adapter in include/evmpi/glib.h (a GSource on the
 * group's fd).
 *
 *   mpirun -np 2 examples/hello_glib
 *
 * Each rank contributes rank + 1; the callback runs inside
 * g_main_loop_run and prints 1 + 2 + ... + size (example.c checks and
 * prints it), destroys the group (which destroys its source) and quits
 * the loop. Exits 1 if the sum is wrong. */
#include <evmpi.h>
#include <evmpi/glib.h>
#include <glib.h>

#include "example.h"

static void on_sum(hello_t *h, void *loop) {
  evmpi_pg_destroy(h->pg); /* from a callback: torn down when this batch ends */
  g_main_loop_quit(loop);
}

int main(void) {
  GMainLoop *loop = g_main_loop_new(NULL, FALSE);
  hello_t h = {0};
  if (example_create_external(&h.pg))
    return 1;
  int rc = evmpi_glib_attach(h.pg, NULL, NULL); /* a source on the default context */
  if (rc != EVMPI_OK)
    return example_fail("evmpi_glib_attach", rc);
  if (hello_start(&h, "by GLib", on_sum, loop))
    return 1;
  g_main_loop_run(loop);
  g_main_loop_unref(loop);
  return h.ok ? 0 : 1;
}
