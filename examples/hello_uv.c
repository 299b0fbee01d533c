/* hello_uv.c: one allreduce, its completion delivered to a libuv loop
 * through the adapter in include/evmpi/uv.h (a uv_poll_t on the group's
 * fd).
 *
 *   mpirun -np 2 examples/hello_uv
 *
 * Each rank contributes rank + 1; the callback runs inside uv_run and
 * prints 1 + 2 + ... + size, then destroys the group, which closes the
 * adapter's handle: with nothing left to watch, uv_run returns. Exits 1 if
 * the sum is wrong. */
#include <evmpi.h>
#include <evmpi/uv.h>
#include <stdio.h>
#include <uv.h>

struct state {
  evmpi_pg_t *pg;
  double value;
  int rank, size;
  int ok;
};

static void on_allreduce(evmpi_work_t *work, void *arg) {
  struct state *s = arg;
  s->ok = evmpi_work_is_success(work) && s->value == s->size * (s->size + 1) / 2;
  if (evmpi_work_is_success(work))
    printf("rank %d of %d: allreduce(sum) = %g (expected %d), delivered by libuv\n", s->rank,
           s->size, s->value, s->size * (s->size + 1) / 2);
  else
    fprintf(stderr, "rank %d: allreduce failed: %s\n", s->rank, evmpi_work_error(work));
  evmpi_work_release(work);
  evmpi_pg_destroy(s->pg); /* from a callback: torn down when this batch ends */
}

static int fail(const char *call, int rc) {
  fprintf(stderr, "%s: %s: %s\n", call, evmpi_strerror(rc), evmpi_last_error());
  return 1;
}

int main(void) {
  struct state s = {0};
  uv_loop_t *loop = uv_default_loop();
  evmpi_pg_options_t *opts = NULL;
  int rc = evmpi_pg_options_new(&opts);
  if (rc == EVMPI_OK)
    rc = evmpi_pg_options_set_loop(opts, EVMPI_LOOP_EXTERNAL);
  if (rc != EVMPI_OK)
    return fail("evmpi_pg_options", rc);
  rc = evmpi_pg_create_with(NULL, NULL, 0, opts, &s.pg);
  evmpi_pg_options_free(opts);
  if (rc != EVMPI_OK)
    return fail("evmpi_pg_create_with", rc);
  if ((rc = evmpi_uv_attach(s.pg, loop)) != EVMPI_OK)
    return fail("evmpi_uv_attach", rc);
  s.rank = evmpi_pg_rank(s.pg);
  s.size = evmpi_pg_size(s.pg);
  s.value = s.rank + 1;

  evmpi_tensor_t t = evmpi_tensor_flat(&s.value, EVMPI_FLOAT64, 1);
  evmpi_work_t *work = NULL;
  if ((rc = evmpi_allreduce(s.pg, &t, EVMPI_SUM, &work)) != EVMPI_OK)
    return fail("evmpi_allreduce", rc);
  evmpi_work_on_complete(work, on_allreduce, &s);
  uv_run(loop, UV_RUN_DEFAULT); /* until the group, the only handle, is gone */
  uv_loop_close(loop);
  return s.ok ? 0 : 1;
}
