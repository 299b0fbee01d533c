/* hello_glib.c: one allreduce, its completion delivered to a GLib main
 * loop through the adapter in include/evmpi/glib.h (a GSource on the
 * group's fd).
 *
 *   mpirun -np 2 examples/hello_glib
 *
 * Each rank contributes rank + 1; the callback runs inside
 * g_main_loop_run and prints 1 + 2 + ... + size, destroys the group
 * (which destroys its source) and quits the loop. Exits 1 if the sum is
 * wrong. */
#include <evmpi.h>
#include <evmpi/glib.h>
#include <glib.h>
#include <stdio.h>

struct state {
  GMainLoop *loop;
  evmpi_pg_t *pg;
  double value;
  int rank, size;
  int ok;
};

static void on_allreduce(evmpi_work_t *work, void *arg) {
  struct state *s = arg;
  s->ok = evmpi_work_is_success(work) && s->value == s->size * (s->size + 1) / 2;
  if (evmpi_work_is_success(work))
    printf("rank %d of %d: allreduce(sum) = %g (expected %d), delivered by GLib\n", s->rank,
           s->size, s->value, s->size * (s->size + 1) / 2);
  else
    fprintf(stderr, "rank %d: allreduce failed: %s\n", s->rank, evmpi_work_error(work));
  evmpi_work_release(work);
  evmpi_pg_destroy(s->pg); /* from a callback: torn down when this batch ends */
  g_main_loop_quit(s->loop);
}

static int fail(const char *call, int rc) {
  fprintf(stderr, "%s: %s: %s\n", call, evmpi_strerror(rc), evmpi_last_error());
  return 1;
}

int main(void) {
  struct state s = {0};
  s.loop = g_main_loop_new(NULL, FALSE);
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
  if ((rc = evmpi_glib_attach(s.pg, NULL, NULL)) != EVMPI_OK)
    return fail("evmpi_glib_attach", rc);
  s.rank = evmpi_pg_rank(s.pg);
  s.size = evmpi_pg_size(s.pg);
  s.value = s.rank + 1;

  evmpi_tensor_t t = evmpi_tensor_flat(&s.value, EVMPI_FLOAT64, 1);
  evmpi_work_t *work = NULL;
  if ((rc = evmpi_allreduce(s.pg, &t, EVMPI_SUM, &work)) != EVMPI_OK)
    return fail("evmpi_allreduce", rc);
  evmpi_work_on_complete(work, on_allreduce, &s);
  g_main_loop_run(s.loop);
  g_main_loop_unref(s.loop);
  return s.ok ? 0 : 1;
}
