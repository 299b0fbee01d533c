/* hello.c: one allreduce, its completion delivered to a libevent loop.
 *
 *   mpirun -np 2 examples/hello
 *
 * Each rank contributes rank + 1; the callback runs on the loop thread and
 * prints the sum, 1 + 2 + ... + size. Exits 1 if the sum is wrong. */
#include <event2/event.h>
#include <evmpi.h>
#include <stdio.h>
#include <stdlib.h>

struct state {
  struct event_base *base;
  double value;
  int rank, size;
  int ok;
};

static void on_allreduce(evmpi_work_t *work, void *arg) {
  struct state *s = arg;
  s->ok = evmpi_work_is_success(work) && s->value == s->size * (s->size + 1) / 2;
  if (evmpi_work_is_success(work))
    printf("rank %d of %d: allreduce(sum) = %g (expected %d), delivered on the loop thread\n",
           s->rank, s->size, s->value, s->size * (s->size + 1) / 2);
  else
    fprintf(stderr, "rank %d: allreduce failed: %s\n", s->rank, evmpi_work_error(work));
  evmpi_work_release(work);
  event_base_loopbreak(s->base);
}

int main(void) {
  struct state s = {0};
  s.base = event_base_new();
  evmpi_pg_t *pg = NULL;
  int rc = evmpi_pg_create(s.base, NULL, 0, &pg);
  if (rc != EVMPI_OK) {
    fprintf(stderr, "evmpi_pg_create: %s: %s\n", evmpi_strerror(rc), evmpi_last_error());
    return 1;
  }
  s.rank = evmpi_pg_rank(pg);
  s.size = evmpi_pg_size(pg);
  s.value = s.rank + 1;

  evmpi_tensor_t t = evmpi_tensor_flat(&s.value, EVMPI_FLOAT64, 1);
  evmpi_work_t *work = NULL;
  rc = evmpi_allreduce(pg, &t, EVMPI_SUM, &work);
  if (rc != EVMPI_OK) {
    fprintf(stderr, "evmpi_allreduce: %s: %s\n", evmpi_strerror(rc), evmpi_last_error());
    return 1;
  }
  evmpi_work_on_complete(work, on_allreduce, &s);
  event_base_dispatch(s.base); /* until the callback breaks the loop */

  evmpi_pg_destroy(pg);
  event_base_free(s.base);
  return s.ok ? 0 : 1;
}
