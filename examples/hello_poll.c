/* hello_poll.c: one allreduce, its completion delivered by a plain poll(2)
 * loop: no libevent. Any loop can drive evmpi this way: create the group
 * for an external loop, watch evmpi_pg_fd for reading, and call
 * evmpi_pg_dispatch whenever it is readable.
 *
 *   mpirun -np 2 examples/hello_poll
 *
 * Each rank contributes rank + 1; the callback runs inside
 * evmpi_pg_dispatch, on this thread, and prints 1 + 2 + ... + size. Exits 1
 * if the sum is wrong. */
#include <evmpi.h>
#include <poll.h>
#include <stdio.h>

struct state {
  double value;
  int rank, size;
  int done, ok;
};

static void on_allreduce(evmpi_work_t *work, void *arg) {
  struct state *s = arg;
  s->ok = evmpi_work_is_success(work) && s->value == s->size * (s->size + 1) / 2;
  if (evmpi_work_is_success(work))
    printf("rank %d of %d: allreduce(sum) = %g (expected %d), delivered by poll(2)\n", s->rank,
           s->size, s->value, s->size * (s->size + 1) / 2);
  else
    fprintf(stderr, "rank %d: allreduce failed: %s\n", s->rank, evmpi_work_error(work));
  evmpi_work_release(work);
  s->done = 1;
}

static int fail(const char *call, int rc) {
  fprintf(stderr, "%s: %s: %s\n", call, evmpi_strerror(rc), evmpi_last_error());
  return 1;
}

int main(void) {
  struct state s = {0};
  evmpi_pg_options_t *opts = NULL;
  int rc = evmpi_pg_options_new(&opts);
  if (rc == EVMPI_OK)
    rc = evmpi_pg_options_set_loop(opts, EVMPI_LOOP_EXTERNAL); /* our loop, below */
  if (rc != EVMPI_OK)
    return fail("evmpi_pg_options", rc);
  evmpi_pg_t *pg = NULL;
  rc = evmpi_pg_create_with(NULL, NULL, 0, opts, &pg);
  evmpi_pg_options_free(opts);
  if (rc != EVMPI_OK)
    return fail("evmpi_pg_create_with", rc);
  s.rank = evmpi_pg_rank(pg);
  s.size = evmpi_pg_size(pg);
  s.value = s.rank + 1;

  evmpi_tensor_t t = evmpi_tensor_flat(&s.value, EVMPI_FLOAT64, 1);
  evmpi_work_t *work = NULL;
  if ((rc = evmpi_allreduce(pg, &t, EVMPI_SUM, &work)) != EVMPI_OK)
    return fail("evmpi_allreduce", rc);
  evmpi_work_on_complete(work, on_allreduce, &s);

  /* The loop: an application would poll its own sockets in the same call. */
  struct pollfd pfd = {.fd = evmpi_pg_fd(pg), .events = POLLIN};
  while (!s.done) {
    if (poll(&pfd, 1, -1) < 0)
      continue; /* EINTR */
    if (pfd.revents & POLLIN && (rc = evmpi_pg_dispatch(pg)) < 0)
      return fail("evmpi_pg_dispatch", rc);
  }

  evmpi_pg_destroy(pg); /* here, on the loop's thread */
  return s.ok ? 0 : 1;
}
