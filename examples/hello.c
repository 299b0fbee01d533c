/* hello.c: one allreduce, its completion delivered to a libevent loop.
 *
 *   mpirun -np 2 examples/hello
 *
 * Each rank contributes rank + 1; the callback runs on the loop thread and
 * prints the sum, 1 + 2 + ... + size (example.c checks and prints it),
 * then breaks the loop. Exits 1 if the sum is wrong. */
#include <event2/event.h>
#include <evmpi.h>

#include "example.h"

static void on_sum(hello_t *h, void *base) {
  (void)h;
  event_base_loopbreak(base);
}

int main(void) {
  struct event_base *base = event_base_new();
  hello_t h = {0};
  if (example_create_on(base, &h.pg)) /* completions go to base */
    return 1;
  if (hello_start(&h, "on the loop thread", on_sum, base))
    return 1;
  event_base_dispatch(base); /* until the callback breaks the loop */

  evmpi_pg_destroy(h.pg);
  event_base_free(base);
  return h.ok ? 0 : 1;
}
