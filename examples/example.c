/* example.c: the helpers of example.h. */
#include "example.h"

#include <stdio.h>

int example_fail(const char *call, int rc) {
  fprintf(stderr, "%s: %s: %s\n", call, evmpi_strerror(rc), evmpi_last_error());
  return 1;
}

int example_create_on(struct event_base *base, evmpi_pg_t **pg) {
  if (!base) { /* event_base_new failed; evmpi_pg_create would start a loop thread */
    fprintf(stderr, "event_base_new failed\n");
    return 1;
  }
  int rc = evmpi_pg_create(base, NULL, 0, pg);
  return rc == EVMPI_OK ? 0 : example_fail("evmpi_pg_create", rc);
}

int example_create_external(evmpi_pg_t **pg) {
  evmpi_pg_options_t *opts = NULL;
  int rc = evmpi_pg_options_new(&opts);
  if (rc == EVMPI_OK)
    rc = evmpi_pg_options_set_loop(opts, EVMPI_LOOP_EXTERNAL);
  if (rc != EVMPI_OK) {
    evmpi_pg_options_free(opts);
    return example_fail("evmpi_pg_options", rc);
  }
  rc = evmpi_pg_create_with(NULL, NULL, 0, opts, pg);
  evmpi_pg_options_free(opts); /* the group no longer needs it */
  return rc == EVMPI_OK ? 0 : example_fail("evmpi_pg_create_with", rc);
}

static void on_allreduce(evmpi_work_t *work, void *arg) {
  hello_t *h = arg;
  int expected = h->size * (h->size + 1) / 2;
  h->ok = evmpi_work_is_success(work) && h->value == expected;
  if (evmpi_work_is_success(work))
    printf("rank %d of %d: allreduce(sum) = %g (expected %d), delivered %s\n", h->rank, h->size,
           h->value, expected, h->by);
  else
    fprintf(stderr, "rank %d: allreduce failed: %s\n", h->rank, evmpi_work_error(work));
  evmpi_work_release(work);
  h->done(h, h->arg);
}

int hello_start(hello_t *h, const char *by, void (*done)(hello_t *h, void *arg), void *arg) {
  h->rank = evmpi_pg_rank(h->pg);
  h->size = evmpi_pg_size(h->pg);
  h->value = h->rank + 1;
  h->ok = 0;
  h->by = by;
  h->done = done;
  h->arg = arg;
  evmpi_tensor_t t = evmpi_tensor_flat(&h->value, EVMPI_FLOAT64, 1);
  evmpi_work_t *work = NULL;
  int rc = evmpi_allreduce(h->pg, &t, EVMPI_SUM, &work);
  if (rc != EVMPI_OK)
    return example_fail("evmpi_allreduce", rc);
  if ((rc = evmpi_work_on_complete(work, on_allreduce, h)) != EVMPI_OK) {
    evmpi_work_release(work);
    return example_fail("evmpi_work_on_complete", rc);
  }
  return 0;
}
