/* http_service.c: an HTTP front end whose requests start collectives over
 * every rank, all on one libevent loop per rank.
 *
 *   mpirun -np 3 examples/http_service [PORT]      (or EVMPI_HTTP_PORT=PORT)
 *   curl 'http://127.0.0.1:PORT/sum?value=5'       {"value":5,"ranks":3,"sum":30}
 *   curl 'http://127.0.0.1:PORT/health'            {"status":"ok","ranks":3,"in_flight":0,"received":0,"answered":0}
 *   curl 'http://127.0.0.1:PORT/quit'              {"status":"bye"}
 *
 * Rank 0 serves HTTP with libevent's evhttp on 127.0.0.1 (port 0, the
 * default, picks a free port; the program prints "listening on
 * 127.0.0.1:PORT" either way). The other ranks serve nothing but run the
 * same kind of loop and take part in every collective.
 *
 * GET /sum?value=N[&delay_ms=D]
 *   Rank 0 broadcasts a small command tensor {SUM, N, D, seq} to every
 *   rank, then every rank r contributes N * (r + 1) to an allreduce(SUM);
 *   the answer, N * (1 + 2 + ... + size), is sent when both collectives
 *   have completed (rank 0 joins their futures with evmpi_future_all).
 *   With delay_ms, rank 1 waits D ms on a libevent timer before joining
 *   the allreduce (a deterministic slow request, for testing; ignored with
 *   one rank), or until /release, whichever comes first. Several /sum
 *   requests may be in flight at once.
 * GET /release
 *   Ends the delay of every /sum received so far at once: rank 0 sends
 *   rank 1 the sequence number of the last command it broadcast, and rank
 *   1 stops waiting for any command up to it, also one whose delay has not
 *   started yet. A test holds a request with a long delay_ms and releases
 *   it when it has seen what it wanted, so that nothing depends on timing.
 * GET /health
 *   Answered at once, also while /sum requests wait for their collectives:
 *   the loop never blocks, the collectives run on evmpi's worker thread.
 *   in_flight: /sum requests waiting for their collectives; received and
 *   answered: valid /sum requests taken in and answered since the start.
 * GET /quit
 *   Broadcasts a QUIT command; every rank leaves its loop, destroys its
 *   group and exits 0. Rank 0 answers once every rank has the command.
 *
 * How the other ranks learn that a request has started: each keeps one
 * broadcast from rank 0 posted at all times, into its command buffer, and
 * re-posts it after handling each command. Collectives must be submitted in
 * the same order on every rank: broadcast, allreduce, broadcast, allreduce,
 * ... Rank 0 keeps that order by submitting a request's broadcast and its
 * allreduce back to back; the other ranks submit the allreduce before they
 * re-post the broadcast.
 *
 * Cost of the design: a rank that waits for a command sits in MPI_Bcast on
 * evmpi's worker thread, and Open MPI's blocking collectives poll, so an
 * idle rank keeps one core busy. A service that idles for long could send
 * the commands with evmpi_send/evmpi_recv instead (their poller backs off
 * to sleeping when nothing arrives) and keep the collectives for the work. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <evmpi.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "example.h"

enum { CMD_SUM = 1, CMD_QUIT = 2 };
enum { DELAYED_RANK = 1, MAX_DELAY_MS = 60000, RELEASE_TAG = 17 };
#define MAX_VALUE INT64_C(1000000000000) /* |N|: keeps the sum far from overflow */

/* What rank 0 broadcasts: one int64 tensor of 4 elements. */
typedef struct {
  int64_t op, value, delay_ms, seq;
} command_t;

struct service {
  struct event_base *base;
  evmpi_pg_t *pg;
  int rank, size;
  int sums;             /* /sum requests answered (rank 0) or taken part in */
  int failed;
  bool quitting;        /* rank 0: after /quit; elsewhere: the QUIT command came */
  int64_t next_seq;     /* of the next command: sent by rank 0, expected elsewhere */
  /* rank 0 */
  struct evhttp *http;
  int in_flight;        /* /sum requests waiting for their collectives */
  int received;         /* valid /sum requests taken in */
  command_t quit_cmd;
  struct evhttp_request *quit_req;
  /* the other ranks */
  command_t cmd;        /* the buffer of the broadcast kept posted */
  /* DELAYED_RANK: /release. A receive from rank 0 is kept posted into
   * release_buf; released_upto is the highest sequence number released. */
  int64_t release_buf, released_upto;
  struct sum_job *held; /* the /sum whose delay is running, if any */
};

/* One /sum, on any rank. The buffers stay here until the collectives using
 * them have completed. */
struct sum_job {
  struct service *svc;
  command_t cmd;                 /* rank 0: the command it broadcasts; elsewhere, the one received */
  int64_t contribution;          /* N * (rank + 1), summed in place */
  struct evhttp_request *req;    /* rank 0: the request to answer */
  struct event *delay;           /* DELAYED_RANK: the timer before joining */
};

static void fatal(struct service *svc, const char *what, const char *why) {
  /* The ranks can no longer agree on the order of collectives: end the job. */
  fprintf(stderr, "rank %d: %s: %s\n", svc->rank, what, why);
  evmpi_pg_abort(svc->pg);
  exit(1);
}

static void reply(struct evhttp_request *req, int code, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply(struct evhttp_request *req, int code, const char *reason, const char *fmt, ...) {
  struct evbuffer *body = evbuffer_new();
  va_list ap;
  va_start(ap, fmt);
  evbuffer_add_vprintf(body, fmt, ap);
  va_end(ap);
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
  evhttp_send_reply(req, code, reason, body);
  evbuffer_free(body);
}

/* ---- ranks other than 0: follow rank 0's commands ---------------------------- */

static void on_contributed(evmpi_work_t *work, void *arg) {
  struct sum_job *job = arg;
  if (!evmpi_work_is_success(work))
    fatal(job->svc, "allreduce", evmpi_work_error(work));
  evmpi_work_release(work);
  free(job);
}

/* Joins the allreduce of a /sum. */
static void contribute(struct sum_job *job) {
  evmpi_tensor_t t = evmpi_tensor_flat(&job->contribution, EVMPI_INT64, 1);
  evmpi_work_t *work = NULL;
  if (evmpi_allreduce(job->svc->pg, &t, EVMPI_SUM, &work) != EVMPI_OK)
    fatal(job->svc, "evmpi_allreduce", evmpi_last_error());
  evmpi_work_on_complete(work, on_contributed, job);
}

static void post_command_broadcast(struct service *svc);

static void on_delay_over(evutil_socket_t fd, short what, void *arg) {
  struct sum_job *job = arg;
  struct service *svc = job->svc;
  event_free(job->delay);
  job->delay = NULL;
  svc->held = NULL;
  contribute(job);              /* first the allreduce, */
  post_command_broadcast(svc);  /* then the next broadcast: the agreed order */
}

static void post_release_recv(struct service *svc);

/* DELAYED_RANK: rank 0 released every command up to release_buf. */
static void on_release(evmpi_work_t *work, void *arg) {
  struct service *svc = arg;
  int rc = evmpi_work_status(work);
  evmpi_work_release(work);
  if (svc->quitting)
    return; /* the group is being destroyed at /quit: no receive after it */
  if (rc != EVMPI_OK)
    fatal(svc, "release receive", evmpi_strerror(rc));
  if (svc->release_buf > svc->released_upto)
    svc->released_upto = svc->release_buf;
  post_release_recv(svc);
  if (svc->held && svc->held->cmd.seq <= svc->released_upto) {
    event_del(svc->held->delay);
    on_delay_over(-1, 0, svc->held);
  }
}

static void post_release_recv(struct service *svc) {
  evmpi_tensor_t t = evmpi_tensor_flat(&svc->release_buf, EVMPI_INT64, 1);
  evmpi_work_t *work = NULL;
  if (evmpi_recv(svc->pg, &t, 0, RELEASE_TAG, &work) != EVMPI_OK)
    fatal(svc, "evmpi_recv", evmpi_last_error());
  evmpi_work_on_complete(work, on_release, svc);
}

static void on_command(evmpi_work_t *work, void *arg) {
  struct service *svc = arg;
  if (!evmpi_work_is_success(work))
    fatal(svc, "command broadcast", evmpi_work_error(work));
  evmpi_work_release(work);
  command_t cmd = svc->cmd; /* copy: the buffer is reused by the next broadcast */
  if (cmd.seq != svc->next_seq++) /* a command lost or out of order: cannot happen */
    fatal(svc, "command broadcast", "unexpected sequence number");

  if (cmd.op == CMD_QUIT) {
    svc->quitting = true; /* the pending release receive ends aborted */
    evmpi_pg_destroy(svc->pg); /* from a callback: done once this batch is over */
    svc->pg = NULL;
    event_base_loopbreak(svc->base);
    return;
  }
  if (cmd.op != CMD_SUM)
    fatal(svc, "command broadcast", "unknown command");
  struct sum_job *job = calloc(1, sizeof *job);
  if (!job)
    fatal(svc, "command", "out of memory");
  job->svc = svc;
  job->cmd = cmd;
  job->contribution = cmd.value * (svc->rank + 1);
  svc->sums++;
  if (svc->rank == DELAYED_RANK && cmd.delay_ms > 0 && cmd.seq > svc->released_upto) {
    /* Wait without blocking the loop; the other ranks' allreduce (and rank
     * 0's HTTP client) wait for us meanwhile. */
    struct timeval tv = {cmd.delay_ms / 1000, (cmd.delay_ms % 1000) * 1000};
    job->delay = evtimer_new(svc->base, on_delay_over, job);
    if (!job->delay || evtimer_add(job->delay, &tv) != 0)
      fatal(svc, "delay", "cannot start a timer");
    svc->held = job;
    return;
  }
  contribute(job);
  post_command_broadcast(svc);
}

static void post_command_broadcast(struct service *svc) {
  evmpi_tensor_t t = evmpi_tensor_flat(&svc->cmd, EVMPI_INT64, 4);
  evmpi_work_t *work = NULL;
  if (evmpi_broadcast(svc->pg, &t, 0, &work) != EVMPI_OK)
    fatal(svc, "evmpi_broadcast", evmpi_last_error());
  evmpi_work_on_complete(work, on_command, svc);
}

/* ---- rank 0: HTTP --------------------------------------------------------------- */

/* Both collectives of a /sum have completed (the join of their futures). */
static void on_sum_done(evmpi_future_t *all, void *arg) {
  struct sum_job *job = arg;
  struct service *svc = job->svc;
  svc->in_flight--;
  svc->sums++;
  if (evmpi_future_status(all) == EVMPI_OK)
    reply(job->req, HTTP_OK, "OK", "{\"value\":%" PRId64 ",\"ranks\":%d,\"sum\":%" PRId64 "}\n",
          job->cmd.value, svc->size, job->contribution);
  else
    reply(job->req, HTTP_INTERNAL, "Internal Server Error", "{\"error\":\"%s\"}\n",
          evmpi_future_error(all));
  evmpi_future_release(all);
  free(job);
}

/* Parses an integer query parameter in lo..hi; false if present but bad. */
static bool int_param(const struct evkeyvalq *q, const char *name, int64_t lo, int64_t hi,
                      bool *present, int64_t *out) {
  const char *s = evhttp_find_header(q, name);
  *present = s != NULL;
  if (!s)
    return true;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi)
    return false;
  *out = v;
  return true;
}

static void handle_sum(struct service *svc, struct evhttp_request *req, const char *query) {
  struct evkeyvalq q;
  TAILQ_INIT(&q);
  bool has_value = false, has_delay = false;
  int64_t value = 0, delay = 0;
  bool ok = query && evhttp_parse_query_str(query, &q) == 0 &&
            int_param(&q, "value", -MAX_VALUE, MAX_VALUE, &has_value, &value) &&
            int_param(&q, "delay_ms", 0, MAX_DELAY_MS, &has_delay, &delay) && has_value;
  evhttp_clear_headers(&q);
  if (!ok) {
    reply(req, HTTP_BADREQUEST, "Bad Request",
          "{\"error\":\"usage: /sum?value=N[&delay_ms=D], |N| <= %" PRId64 ", 0 <= D <= %d\"}\n",
          MAX_VALUE, MAX_DELAY_MS);
    return;
  }
  struct sum_job *job = calloc(1, sizeof *job);
  if (!job) {
    reply(req, HTTP_SERVUNAVAIL, "Service Unavailable", "{\"error\":\"out of memory\"}\n");
    return;
  }
  job->svc = svc;
  job->req = req;
  job->cmd = (command_t){CMD_SUM, value, delay, svc->next_seq++};
  job->contribution = value; /* rank 0's: N * (0 + 1) */

  /* The broadcast and the allreduce back to back, so that no other
   * collective can come between them on this rank. */
  evmpi_tensor_t tc = evmpi_tensor_flat(&job->cmd, EVMPI_INT64, 4);
  evmpi_tensor_t tv = evmpi_tensor_flat(&job->contribution, EVMPI_INT64, 1);
  evmpi_work_t *bcast = NULL, *reduce = NULL;
  if (evmpi_broadcast(svc->pg, &tc, 0, &bcast) != EVMPI_OK ||
      evmpi_allreduce(svc->pg, &tv, EVMPI_SUM, &reduce) != EVMPI_OK)
    fatal(svc, "/sum", evmpi_last_error());

  /* Answer when both have completed. The join holds its own references to
   * the futures, so the works can be released now. */
  evmpi_future_t *parts[2] = {evmpi_work_get_future(bcast), evmpi_work_get_future(reduce)};
  evmpi_future_t *all = NULL;
  if (evmpi_future_all(parts, 2, &all) != EVMPI_OK ||
      evmpi_future_then(all, on_sum_done, job) != EVMPI_OK)
    fatal(svc, "/sum", evmpi_last_error());
  evmpi_work_release(bcast);
  evmpi_work_release(reduce);
  svc->in_flight++;
  svc->received++;
}

/* A release on its way to DELAYED_RANK: the buffer lives until sent. */
struct release_send {
  struct service *svc;
  int64_t upto;
};

static void on_release_sent(evmpi_work_t *work, void *arg) {
  struct release_send *rs = arg;
  int rc = evmpi_work_status(work);
  if (rc != EVMPI_OK && !(rc == EVMPI_ERR_ABORTED && rs->svc->quitting))
    fatal(rs->svc, "release send", evmpi_work_error(work));
  evmpi_work_release(work);
  free(rs);
}

/* Rank 0: tells DELAYED_RANK that every command so far is released. */
static void handle_release(struct service *svc, struct evhttp_request *req) {
  int64_t upto = svc->next_seq - 1;
  if (svc->size > DELAYED_RANK) {
    struct release_send *rs = malloc(sizeof *rs);
    if (!rs) {
      reply(req, HTTP_SERVUNAVAIL, "Service Unavailable", "{\"error\":\"out of memory\"}\n");
      return;
    }
    rs->svc = svc;
    rs->upto = upto;
    evmpi_tensor_t t = evmpi_tensor_flat(&rs->upto, EVMPI_INT64, 1);
    evmpi_work_t *work = NULL;
    if (evmpi_send(svc->pg, &t, DELAYED_RANK, RELEASE_TAG, &work) != EVMPI_OK)
      fatal(svc, "evmpi_send", evmpi_last_error());
    evmpi_work_on_complete(work, on_release_sent, rs);
  }
  reply(req, HTTP_OK, "OK", "{\"released_upto\":%" PRId64 "}\n", upto);
}

static void on_quit_reply_sent(struct evhttp_request *req, void *arg) {
  struct service *svc = arg;
  event_base_loopexit(svc->base, NULL);
}

/* Every rank has the QUIT command (and every earlier /sum has been
 * answered: collectives complete in order). */
static void on_quit_broadcast(evmpi_work_t *work, void *arg) {
  struct service *svc = arg;
  if (!evmpi_work_is_success(work))
    fatal(svc, "quit broadcast", evmpi_work_error(work));
  evmpi_work_release(work);
  if (!svc->quit_req) { /* started without a request: leave now */
    event_base_loopexit(svc->base, NULL);
    return;
  }
  /* Leave the loop once the answer has been written; at the latest after
   * a second, should the client have gone away. */
  evhttp_request_set_on_complete_cb(svc->quit_req, on_quit_reply_sent, svc);
  reply(svc->quit_req, HTTP_OK, "OK", "{\"status\":\"bye\"}\n");
  struct timeval one_second = {1, 0};
  event_base_loopexit(svc->base, &one_second);
}

static void start_quit(struct service *svc, struct evhttp_request *req) {
  svc->quitting = true;
  svc->quit_req = req;
  svc->quit_cmd = (command_t){CMD_QUIT, 0, 0, svc->next_seq++};
  evmpi_tensor_t t = evmpi_tensor_flat(&svc->quit_cmd, EVMPI_INT64, 4);
  evmpi_work_t *work = NULL;
  if (evmpi_broadcast(svc->pg, &t, 0, &work) != EVMPI_OK)
    fatal(svc, "evmpi_broadcast", evmpi_last_error());
  evmpi_work_on_complete(work, on_quit_broadcast, svc);
}

static void on_request(struct evhttp_request *req, void *arg) {
  struct service *svc = arg;
  const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
  const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
  if (!path) {
    reply(req, HTTP_BADREQUEST, "Bad Request", "{\"error\":\"bad request\"}\n");
  } else if (strcmp(path, "/health") == 0) {
    reply(req, HTTP_OK, "OK",
          "{\"status\":\"ok\",\"ranks\":%d,\"in_flight\":%d,\"received\":%d,\"answered\":%d}\n",
          svc->size, svc->in_flight, svc->received, svc->sums);
  } else if (svc->quitting) {
    reply(req, HTTP_SERVUNAVAIL, "Service Unavailable", "{\"error\":\"shutting down\"}\n");
  } else if (strcmp(path, "/sum") == 0) {
    handle_sum(svc, req, evhttp_uri_get_query(uri));
  } else if (strcmp(path, "/release") == 0) {
    handle_release(svc, req);
  } else if (strcmp(path, "/quit") == 0) {
    start_quit(svc, req);
  } else {
    reply(req, HTTP_NOTFOUND, "Not Found", "{\"error\":\"no such path; try /sum?value=N, "
          "/health, /release or /quit\"}\n");
  }
}

/* Binds 127.0.0.1:port (0 = any free port); returns the port, or -1. */
static int listen_loopback(struct service *svc, int port) {
  svc->http = evhttp_new(svc->base);
  if (!svc->http)
    return -1;
  evhttp_set_allowed_methods(svc->http, EVHTTP_REQ_GET);
  evhttp_set_gencb(svc->http, on_request, svc);
  struct evhttp_bound_socket *sock = evhttp_bind_socket_with_handle(svc->http, "127.0.0.1", port);
  if (!sock)
    return -1;
  struct sockaddr_in addr;
  socklen_t len = sizeof addr;
  if (getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&addr, &len) != 0)
    return -1;
  return ntohs(addr.sin_port);
}

static int parse_port(int argc, char **argv) {
  const char *s = argc > 1 ? argv[1] : getenv("EVMPI_HTTP_PORT");
  if (!s || !*s)
    return 0;
  char *end;
  long v = strtol(s, &end, 10);
  return *end || v < 0 || v > 65535 ? -1 : (int)v;
}

int main(int argc, char **argv) {
  struct service svc;
  memset(&svc, 0, sizeof svc);
  int port = parse_port(argc, argv);
  svc.base = event_base_new();
  if (example_create_on(svc.base, &svc.pg))
    return 1;
  svc.released_upto = -1; /* sequence numbers start at 0 */
  svc.rank = evmpi_pg_rank(svc.pg);
  svc.size = evmpi_pg_size(svc.pg);

  if (svc.rank == 0) {
    signal(SIGPIPE, SIG_IGN); /* a client that hangs up must not kill us */
    int bound = port < 0 ? -1 : listen_loopback(&svc, port);
    if (bound < 0) {
      if (port < 0)
        fprintf(stderr, "usage: %s [PORT] (or EVMPI_HTTP_PORT=PORT), PORT in 0..65535\n", argv[0]);
      else
        fprintf(stderr, "rank 0: cannot listen on 127.0.0.1:%d\n", port);
      svc.failed = 1;
      start_quit(&svc, NULL); /* the other ranks are waiting for commands */
    } else {
      printf("listening on 127.0.0.1:%d (%d rank(s))\n", bound, svc.size);
      fflush(stdout);
    }
  } else {
    if (svc.rank == DELAYED_RANK)
      post_release_recv(&svc);
    post_command_broadcast(&svc);
  }

  event_base_dispatch(svc.base);

  if (svc.rank == 0)
    printf("rank 0: answered %d /sum request(s), bye\n", svc.sums);
  else
    printf("rank %d: took part in %d /sum request(s), bye\n", svc.rank, svc.sums);
  fflush(stdout);
  if (svc.http)
    evhttp_free(svc.http);
  evmpi_pg_destroy(svc.pg); /* NULL (already destroyed) on the other ranks */
  event_base_free(svc.base);
  return svc.failed ? 1 : 0;
}
