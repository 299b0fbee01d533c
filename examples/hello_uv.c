/* hello_uv.c: one allreduce, its completion delivered to a libuv loop
 * through the adapter in include/evmpi/uv.h (a uv_poll_t on the group's
 * fd).
 *
 *   mpirun -np 2 examples/hello_uv
 *
 * Each rank contributes rank + 1; the callback runs inside uv_run and
 * prints 1 + 2 + ... + size (example.c checks and prints it), then
 * destroys the group, which closes the adapter's handle: with nothing left
 * to watch, uv_run returns. Exits 1 if the sum is wrong. */
#include <evmpi.h>
#include <evmpi/uv.h>
#include <uv.h>

#include "example.h"

static void on_sum(hello_t *h, void *arg) {
  (void)arg;
  evmpi_pg_destroy(h->pg); /* from a callback: torn down when this batch ends */
}

int main(void) {
  uv_loop_t *loop = uv_default_loop();
  hello_t h = {0};
  if (example_create_external(&h.pg))
    return 1;
  int rc = evmpi_uv_attach(h.pg, loop); /* the group's fd, watched by loop */
  if (rc != EVMPI_OK)
    return example_fail("evmpi_uv_attach", rc);
  if (hello_start(&h, "by libuv", on_sum, NULL))
    return 1;
  uv_run(loop, UV_RUN_DEFAULT); /* until the group, the only handle, is gone */
  uv_loop_close(loop);
  return h.ok ? 0 : 1;
}
