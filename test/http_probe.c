/* http_probe.c: an HTTP client that checks examples/http_service, written
 * with libevent's own evhttp client so that the test needs nothing else.
 *
 *   test/test_http_probe PORT RANKS
 *
 * Talks to 127.0.0.1:PORT, where http_service runs on RANKS ranks, and
 * checks, in order:
 *  1. /health answers 200 {"status":"ok","ranks":RANKS,"in_flight":0};
 *  2. /sum?value=N answers 200 with sum N * RANKS * (RANKS + 1) / 2, for
 *     several N (negative, zero, large), one request at a time;
 *  3. with a slow /sum in flight (delay_ms=SLOW_MS: rank 1 waits that long
 *     before joining the allreduce), three /health requests each answer in
 *     under HEALTH_MAX_MS, report in_flight 1, and come back before the
 *     slow /sum, which then answers correctly after at least SLOW_MS (the
 *     timing checks need RANKS >= 2: with one rank there is no rank 1);
 *  4. four /sum requests sent at once, the first slowed by 600 ms: a
 *     /health 200 ms later sees all four in flight, and all four answer
 *     correctly;
 *  5. malformed requests get 400 and an unknown path 404;
 *  6. /quit answers 200 {"status":"bye"}.
 * /quit is sent at the end even after a failure, so that the service ends.
 * Every request has a deadline; exits 0 when every check passed. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
  SLOW_MS = 1500,       /* the slowed /sum's delay */
  HEALTH_MAX_MS = 400,  /* "well under" SLOW_MS */
  DEADLINE_MS = 15000,  /* any one request */
  CONCURRENT_PEEK_MS = 200, /* when to look at 4 concurrent /sum (slowed by 600 ms) */
};

static struct event_base *base;
static int port, ranks, failures;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(bool ok, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%s: ", ok ? "ok" : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  fflush(stdout);
  va_end(ap);
  if (!ok)
    failures++;
}

/* One GET and its outcome. */
struct call {
  char path[128];
  struct evhttp_connection *conn;
  bool done;
  int code;         /* 0: no answer (connection failed or timed out) */
  char body[512];
  double t0, ms;    /* start, and time to the answer */
};

static void on_response(struct evhttp_request *req, void *arg) {
  struct call *c = arg;
  c->done = true;
  c->ms = now_ms() - c->t0;
  if (!req)
    return;
  c->code = evhttp_request_get_response_code(req);
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  size_t n = evbuffer_get_length(in);
  if (n >= sizeof c->body)
    n = sizeof c->body - 1;
  evbuffer_copyout(in, c->body, n);
  c->body[n] = '\0';
  if (n && c->body[n - 1] == '\n')
    c->body[n - 1] = '\0';
}

/* Sends GET path on a connection of its own. */
static void start(struct call *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void start(struct call *c, const char *fmt, ...) {
  memset(c, 0, sizeof *c);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->path, sizeof c->path, fmt, ap);
  va_end(ap);
  c->conn = evhttp_connection_base_new(base, NULL, "127.0.0.1", (unsigned short)port);
  struct evhttp_request *req = c->conn ? evhttp_request_new(on_response, c) : NULL;
  if (!req) {
    c->done = true;
    return;
  }
  evhttp_connection_set_timeout(c->conn, DEADLINE_MS / 1000);
  evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
  c->t0 = now_ms();
  if (evhttp_make_request(c->conn, req, EVHTTP_REQ_GET, c->path) != 0)
    c->done = true; /* libevent has freed req */
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {}

/* Runs the loop until c has its answer or its deadline has passed. */
static bool finish(struct call *c) {
  double deadline = now_ms() + DEADLINE_MS;
  while (!c->done && now_ms() < deadline)
    event_base_loop(base, EVLOOP_ONCE); /* the tick wakes it at least every 50 ms */
  if (c->conn) {
    evhttp_connection_free(c->conn);
    c->conn = NULL;
  }
  if (!c->done)
    printf("     %s: no answer in %d ms\n", c->path, DEADLINE_MS);
  return c->done && c->code != 0;
}

static bool get(struct call *c, const char *path) {
  start(c, "%s", path);
  return finish(c);
}

/* Checks a /sum answer: 200 and the right sum. */
static void check_sum(const struct call *c, int64_t value) {
  int64_t want = value * ranks * (ranks + 1) / 2;
  long long v = 0, s = 0;
  int r = 0;
  bool ok = c->code == 200 &&
            sscanf(c->body, "{\"value\":%lld,\"ranks\":%d,\"sum\":%lld}", &v, &r, &s) == 3 &&
            v == value && r == ranks && s == want;
  check(ok, "GET %s -> %d %s (want sum %" PRId64 ") in %.0f ms", c->path, c->code, c->body, want,
        c->ms);
}

/* Checks a /health answer; returns its in_flight, or -1. */
static int check_health(const struct call *c, int max_ms) {
  int r = 0, in_flight = -1;
  bool ok = c->code == 200 &&
            sscanf(c->body, "{\"status\":\"ok\",\"ranks\":%d,\"in_flight\":%d}", &r, &in_flight) == 2 &&
            r == ranks && (max_ms <= 0 || c->ms < max_ms);
  check(ok, "GET %s -> %d %s in %.0f ms%s", c->path, c->code, c->body, c->ms,
        max_ms > 0 ? " (must be quick)" : "");
  return ok ? in_flight : -1;
}

int main(int argc, char **argv) {
  if (argc != 3 || (port = atoi(argv[1])) <= 0 || port > 65535 || (ranks = atoi(argv[2])) < 1) {
    fprintf(stderr, "usage: %s PORT RANKS\n", argv[0]);
    return 2;
  }
  base = event_base_new();
  struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
  struct timeval fifty_ms = {0, 50000};
  event_add(tick, &fifty_ms);
  struct call c, slow, h, many[4];

  /* 1. health, idle */
  get(&c, "/health");
  check(check_health(&c, 0) == 0, "idle: in_flight is 0");

  /* 2. sums, one at a time */
  const int64_t values[] = {1, 7, -3, 0, 123456789, -1000000000000};
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    char path[64];
    snprintf(path, sizeof path, "/sum?value=%" PRId64, values[i]);
    get(&c, path);
    check_sum(&c, values[i]);
  }

  /* 3. health while a slow sum waits for its allreduce */
  start(&slow, "/sum?value=11&delay_ms=%d", SLOW_MS);
  for (int i = 0; i < 3; i++) {
    get(&h, "/health");
    if (ranks >= 2) {
      int in_flight = check_health(&h, HEALTH_MAX_MS);
      check(in_flight == 1 && !slow.done, "/health %d answered while the slow /sum is in flight "
            "(in_flight %d, slow /sum %s)", i + 1, in_flight, slow.done ? "already answered" : "waiting");
    } else {
      check_health(&h, 0);
    }
  }
  finish(&slow);
  check_sum(&slow, 11);
  if (ranks >= 2)
    check(slow.ms >= SLOW_MS, "the slow /sum took %.0f ms, at least its delay_ms=%d", slow.ms,
          SLOW_MS);

  /* 4. several sums in flight at once, the first one slowed, so that all
   * of them are still waiting CONCURRENT_PEEK_MS later */
  const int64_t concurrent[] = {2, 3, 5, 8};
  for (int i = 0; i < 4; i++)
    start(&many[i], "/sum?value=%" PRId64 "%s", concurrent[i], i == 0 ? "&delay_ms=600" : "");
  if (ranks >= 2) {
    double until = now_ms() + CONCURRENT_PEEK_MS;
    while (now_ms() < until)
      event_base_loop(base, EVLOOP_ONCE);
    get(&h, "/health");
    int in_flight = check_health(&h, HEALTH_MAX_MS);
    check(in_flight == 4, "4 /sum requests in flight at once (in_flight %d)", in_flight);
  }
  for (int i = 0; i < 4; i++)
    finish(&many[i]);
  for (int i = 0; i < 4; i++)
    check_sum(&many[i], concurrent[i]);

  /* 5. malformed requests */
  const char *bad[] = {"/sum", "/sum?value=abc", "/sum?value=5&delay_ms=-1", "/sum?value=99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    get(&c, bad[i]);
    check(c.code == 400, "GET %s -> %d (want 400)", bad[i], c.code);
  }
  get(&c, "/nope");
  check(c.code == 404, "GET /nope -> %d (want 404)", c.code);
  get(&c, "/health");
  check(check_health(&c, 0) == 0, "in_flight is back to 0");

  /* 6. quit, whatever happened before */
  get(&c, "/quit");
  check(c.code == 200 && strcmp(c.body, "{\"status\":\"bye\"}") == 0, "GET /quit -> %d %s", c.code,
        c.body);

  printf("%s: %d check(s) failed\n", failures ? "FAIL" : "PASS", failures);
  event_free(tick);
  event_base_free(base);
  return failures ? 1 : 0;
}
