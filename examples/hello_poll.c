/* hello_poll.c: one allreduce, its completion delivered by a plain poll(2)
 * loop: no libevent. Any loop can drive evmpi this way: create the group
 * for an external loop, watch evmpi_pg_fd for reading, and call
 * evmpi_pg_dispatch whenever it is readable.
 *
 *   mpirun -np 2 examples/hello_poll
 *
 * Each rank contributes rank + 1; the callback runs inside
 * evmpi_pg_dispatch, on this thread, and prints 1 + 2 + ... + size
 * (example.c checks and prints it). Exits 1 if the sum is wrong. */
#include <evmpi.h>
#include <poll.h>

#include "example.h"

static void on_sum(hello_t *h, void *done) {
  (void)h;
  *(int *)done = 1;
}

int main(void) {
  hello_t h = {0};
  int done = 0, rc;
  if (example_create_external(&h.pg)) /* for our loop, below */
    return 1;
  if (hello_start(&h, "by poll(2)", on_sum, &done))
    return 1;

  /* The loop: an application would poll its own sockets in the same call. */
  struct pollfd pfd = {.fd = evmpi_pg_fd(h.pg), .events = POLLIN};
  while (!done) {
    if (poll(&pfd, 1, -1) < 0)
      continue; /* EINTR */
    if (pfd.revents & POLLIN && (rc = evmpi_pg_dispatch(h.pg)) < 0)
      return example_fail("evmpi_pg_dispatch", rc);
  }

  evmpi_pg_destroy(h.pg); /* here, on the loop's thread */
  return h.ok ? 0 : 1;
}
