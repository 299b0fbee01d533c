/* http_probe.c: an HTTP client that checks examples/http_service, written
 * with libevent's own evhttp client so that the test needs nothing else.
 *
 *   test/test_http_probe PORT RANKS
 *
 * Talks to 127.0.0.1:PORT, where http_service runs on RANKS ranks, and
 * checks, in order:
 *  1. /health answers 200 {"status":"ok","ranks":RANKS,"in_flight":0,...};
 *  2. /sum?value=N answers 200 with sum N * RANKS * (RANKS + 1) / 2, for
 *     several N (negative, zero, large), one request at a time;
 *  3. with a /sum held in flight (delay_ms=HOLD_MS: rank 1 waits before
 *     joining the allreduce until /release), three /health requests each
 *     answer, report in_flight 1, and come back while the held /sum is
 *     still unanswered; after /release it answers correctly;
 *  4. a /sum with delay_ms=TIMED_MS and no release answers correctly after
 *     at least TIMED_MS;
 *  5. four /sum requests, the first held: once /health has seen all four
 *     arrive, it reports all four in flight and none answered; after
 *     /release all four answer correctly;
 *  6. malformed requests get 400 and an unknown path 404;
 *  7. /quit answers 200 {"status":"bye"}.
 * Nothing depends on how fast the machine is: the probe waits for what the
 * service reports (requests received and answered) and holds requests until
 * it has seen what it checks. The checks that need a rank 1 to hold a
 * request are made with RANKS >= 2 only. Every wait has a generous
 * deadline, there only to turn a hang into a failure. /release and /quit
 * are sent at the end even after a failure, so that the service ends.
 * Exits 0 when every check passed. */
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
  DEADLINE_MS = 15000, /* any one request, and any wait for the service's state */
  HOLD_MS = 60000,     /* a held /sum's delay: longer than any deadline, so only /release ends it */
  TIMED_MS = 300,      /* a /sum whose delay runs out by itself */
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
  /* Longer than a wait for the service's state while this one is held. */
  evhttp_connection_set_timeout(c->conn, 2 * DEADLINE_MS / 1000);
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

/* What /health reported. */
struct health {
  int ranks, in_flight, received, answered;
};

/* Parses a /health answer; false unless it is a well-formed 200. */
static bool parse_health(const struct call *c, struct health *h) {
  return c->code == 200 &&
         sscanf(c->body, "{\"status\":\"ok\",\"ranks\":%d,\"in_flight\":%d,\"received\":%d,"
                "\"answered\":%d}", &h->ranks, &h->in_flight, &h->received, &h->answered) == 4;
}

/* GET /health, checked; returns false (with *h zeroed) if it failed. */
static bool check_health(struct health *h) {
  struct call c;
  memset(h, 0, sizeof *h);
  get(&c, "/health");
  bool ok = parse_health(&c, h) && h->ranks == ranks;
  check(ok, "GET /health -> %d %s in %.0f ms (want ranks %d)", c.code, c.body, c.ms, ranks);
  return ok;
}

/* Polls /health until the service has received `received` /sum requests;
 * false, saying what it saw, if that has not happened in DEADLINE_MS. */
static bool wait_received(int received, struct health *h) {
  double t0 = now_ms(), deadline = t0 + DEADLINE_MS;
  struct call c;
  int polls = 0;
  for (;;) {
    get(&c, "/health");
    polls++;
    if (!parse_health(&c, h))
      memset(h, 0, sizeof *h);
    else if (h->received >= received)
      return true;
    if (now_ms() >= deadline)
      break;
    double until = now_ms() + 10; /* the other requests progress meanwhile */
    while (now_ms() < until)
      event_base_loop(base, EVLOOP_ONCE);
  }
  check(false, "the service received %d /sum request(s) within %d ms (%d polls, last /health "
        "-> %d %s)", received, DEADLINE_MS, polls, c.code, c.body);
  return false;
}

/* GET /release: ends every held /sum. */
static void release(void) {
  struct call c;
  get(&c, "/release");
  check(c.code == 200 && strncmp(c.body, "{\"released_upto\":", 17) == 0, "GET /release -> %d %s",
        c.code, c.body);
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
  struct call c, held, many[4];
  struct health h;
  bool holds = ranks >= 2; /* a rank 1 that can hold a /sum */

  /* 1. health, idle */
  check_health(&h);
  check(h.in_flight == 0 && h.received == 0 && h.answered == 0,
        "idle: in_flight %d, received %d, answered %d (want 0, 0, 0)", h.in_flight, h.received,
        h.answered);

  /* 2. sums, one at a time */
  const int64_t values[] = {1, 7, -3, 0, 123456789, -1000000000000};
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    char path[64];
    snprintf(path, sizeof path, "/sum?value=%" PRId64, values[i]);
    get(&c, path);
    check_sum(&c, values[i]);
  }
  int received = (int)(sizeof values / sizeof values[0]);

  /* 3. health while a held sum waits for its allreduce */
  start(&held, "/sum?value=11&delay_ms=%d", HOLD_MS);
  received++;
  if (wait_received(received, &h)) {
    for (int i = 0; i < 3; i++) {
      if (!check_health(&h))
        continue;
      if (holds)
        check(h.in_flight == 1 && h.answered == received - 1 && !held.done,
              "/health %d answered while the held /sum is in flight (in_flight %d, answered %d of "
              "%d, held /sum %s)", i + 1, h.in_flight, h.answered, received,
              held.done ? "already answered" : "waiting");
    }
  }
  bool answered_early = held.done;
  release();
  finish(&held);
  check_sum(&held, 11);
  if (holds)
    check(!answered_early, "the held /sum was answered only after /release (after %.0f ms)",
          held.ms);

  /* 4. a delay that runs out by itself */
  char path[64];
  snprintf(path, sizeof path, "/sum?value=13&delay_ms=%d", TIMED_MS);
  get(&c, path);
  received++;
  check_sum(&c, 13);
  if (holds)
    check(c.ms >= TIMED_MS, "the /sum with delay_ms=%d took %.0f ms, at least its delay", TIMED_MS,
          c.ms);

  /* 5. several sums in flight at once. The first is held, and in the
   * service before the others are sent: they queue behind it, so all four
   * stay in flight until /release, however long they take to arrive. */
  const int64_t concurrent[] = {2, 3, 5, 8};
  int before = received;
  start(&many[0], "/sum?value=%" PRId64 "&delay_ms=%d", concurrent[0], HOLD_MS);
  received++;
  if (wait_received(received, &h)) {
    for (int i = 1; i < 4; i++)
      start(&many[i], "/sum?value=%" PRId64, concurrent[i]);
    received += 3;
    if (wait_received(received, &h) && holds) {
      int done = 0;
      for (int i = 0; i < 4; i++)
        done += many[i].done;
      check(h.in_flight == 4 && h.answered == before && done == 0,
            "4 /sum requests in flight at once (in_flight %d, received %d, answered %d of %d "
            "before them, %d answer(s) at the client)", h.in_flight, h.received, h.answered,
            before, done);
    }
  } else {
    for (int i = 1; i < 4; i++) {
      many[i] = (struct call){.done = true};
      snprintf(many[i].path, sizeof many[i].path, "(not sent) /sum?value=%" PRId64, concurrent[i]);
    }
  }
  release();
  for (int i = 0; i < 4; i++)
    finish(&many[i]);
  for (int i = 0; i < 4; i++)
    check_sum(&many[i], concurrent[i]);

  /* 6. malformed requests */
  const char *bad[] = {"/sum", "/sum?value=abc", "/sum?value=5&delay_ms=-1", "/sum?value=99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    get(&c, bad[i]);
    check(c.code == 400, "GET %s -> %d (want 400)", bad[i], c.code);
  }
  get(&c, "/nope");
  check(c.code == 404, "GET /nope -> %d (want 404)", c.code);
  check_health(&h);
  check(h.in_flight == 0 && h.received == received && h.answered == received,
        "all done: in_flight %d (want 0), received %d and answered %d (want %d)", h.in_flight,
        h.received, h.answered, received);

  /* 7. quit, whatever happened before; a /sum still held would keep rank 1
   * from taking the quit command */
  if (failures)
    release();
  get(&c, "/quit");
  check(c.code == 200 && strcmp(c.body, "{\"status\":\"bye\"}") == 0, "GET /quit -> %d %s", c.code,
        c.body);

  printf("%s: %d check(s) failed\n", failures ? "FAIL" : "PASS", failures);
  event_free(tick);
  event_base_free(base);
  return failures ? 1 : 0;
}
