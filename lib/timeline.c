/* timeline.c: EVMPI_TIMELINE=path writes every finished operation of this
 * process as a Chrome trace event ("X", complete event) to one JSON file
 * per rank: path with "%r" replaced by the world rank, or
 * path.<rank>.json. chrome://tracing and Perfetto open it; each rank is a
 * process (pid = world rank), collectives and point-to-point messages are
 * two threads of it. Times are CLOCK_MONOTONIC microseconds. */
#include "timeline-internal.h"
#include "pg-internal.h"
#include "work-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *out;
static bool first = true;
static int world_rank;

static void close_file(void) {
  pthread_mutex_lock(&lock);
  if (out) {
    fputs("\n]\n", out);
    fclose(out);
    out = NULL;
  }
  pthread_mutex_unlock(&lock);
}

static bool opened; /* under lock: the first path given is the file's */

void evmpi__timeline_open(const char *path) {
  pthread_mutex_lock(&lock);
  if (opened) {
    pthread_mutex_unlock(&lock);
    return;
  }
  opened = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  char name[4096];
  const char *mark = strstr(path, "%r");
  if (mark)
    snprintf(name, sizeof name, "%.*s%d%s", (int)(mark - path), path, world_rank, mark + 2);
  else
    snprintf(name, sizeof name, "%s.%d.json", path, world_rank);
  FILE *f = fopen(name, "w");
  if (!f) {
    fprintf(stderr, "evmpi: EVMPI_TIMELINE: cannot open %s\n", name);
    pthread_mutex_unlock(&lock);
    return;
  }
  out = f;
  fputs("[\n", out);
  fprintf(out, "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":\"rank %d\"}},\n"
               "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":1,\"args\":{\"name\":\"collectives\"}},\n"
               "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":2,\"args\":{\"name\":\"point to point\"}}",
          world_rank, world_rank, world_rank, world_rank);
  first = false;
  pthread_mutex_unlock(&lock);
  atexit(close_file);
}

void evmpi__timeline_flush(void) {
  pthread_mutex_lock(&lock);
  if (out)
    fflush(out);
  pthread_mutex_unlock(&lock);
}

void evmpi__timeline_record(const evmpi_work_t *w, int status) {
  if (!w->pg->settings.timeline[0])
    return; /* its group has no timeline (another may have one) */
  double start = (double)atomic_load(&w->t_started) / 1e3;
  double end = (double)atomic_load(&w->t_finished) / 1e3;
  pthread_mutex_lock(&lock);
  if (out) {
    fprintf(out, "%s{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,"
                 "\"pid\":%d,\"tid\":%d,\"args\":{\"seq\":%llu,\"queued_us\":%.3f,\"status\":\"%s\"%s}}",
            first ? "" : ",\n", w->op->name, w->kind == EVMPI_WORK_COLLECTIVE ? "collective" : "p2p",
            start, end - start, world_rank, w->kind == EVMPI_WORK_COLLECTIVE ? 1 : 2,
            (unsigned long long)w->seq, (double)w->t_queued / 1e3, evmpi_strerror(status),
            w->ran_on_loop                     ? ",\"thread\":\"loop\""
            : w->kind == EVMPI_WORK_COLLECTIVE ? ",\"thread\":\"worker\""
                                               : ",\"thread\":\"poller\"");
    first = false;
  }
  pthread_mutex_unlock(&lock);
}
