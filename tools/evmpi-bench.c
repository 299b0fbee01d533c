/* evmpi-bench: evmpi against raw MPI, measured in the same run, in the shape
 * of the OSU micro-benchmarks (a "# evmpi-bench <Name>" table per mode,
 * "# Size" 10 wide, figures 20 wide with 2 decimals; --json for machines).
 *
 *   mpirun -np 2 tools/evmpi-bench [--op MODE[,MODE...]] [options]
 *
 * The modes (tools/bench_*.c say exactly what each one times):
 *   allreduce       raw blocking MPI_Allreduce vs evmpi submit-to-callback, by size
 *   broadcast       the same for MPI_Bcast / evmpi_broadcast
 *   allgather_base  the same for MPI_Allgather / evmpi_allgather_base
 *   coalesced       T tensors: raw, one evmpi work each, one coalesced work
 *   pipelined       N allreduces queued at once vs N back to back: ops/s
 *   pingpong        half round trip between ranks 0 and 1 through callbacks
 *   msgrate         windows of small messages in flight: messages/s
 *   overlap         ping-pong latency while long collectives run on the group
 *   responsiveness  lateness of a 1 ms loop timer while 64 MiB allreduces run
 *   wakeups         completions delivered per loop wakeup
 *   idle            CPU while waiting: nothing, a posted receive, a posted
 *                   collective with a late root, 64 idle groups
 *   scale           message rate with 10,000 receives pending; 8 B allreduce
 *                   with 64 groups alive
 *   cuda            allreduce on CUDA device memory (built with CUDA; needs a GPU)
 * "default" is every mode but coalesced, idle, scale and cuda (what make bench runs);
 * "all" adds them. Rank 0 prints; every rank takes part. */
#include "bench.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *name, *alias;
  void (*run)(bench_t *b);
  bool in_default;
} bench_mode_t;

static const bench_mode_t modes[] = {
    {"allreduce", NULL, mode_allreduce, true},
    {"broadcast", "bcast", mode_broadcast, true},
    {"allgather_base", "allgather", mode_allgather_base, true},
    {"pipelined", NULL, mode_pipelined, true},
    {"pingpong", "latency", mode_pingpong, true},
    {"msgrate", NULL, mode_msgrate, true},
    {"overlap", "p2p-during-collective", mode_overlap, true},
    {"responsiveness", NULL, mode_responsiveness, true},
    {"wakeups", NULL, mode_wakeups, true},
    {"coalesced", NULL, mode_coalesced, false},
    {"idle", NULL, mode_idle, false},
    {"scale", NULL, mode_scale, false},
#ifdef EVMPI_BENCH_CUDA
    {"cuda", "device", mode_cuda, false}, /* needs a GPU */
#endif
};
enum { NMODES = sizeof modes / sizeof modes[0] };

static void usage(FILE *f) {
  fprintf(f,
          "usage: mpirun -np N evmpi-bench [options]\n"
          "  --op LIST         modes, comma-separated, or \"default\" (every mode but\n"
          "                    coalesced, idle and scale: the default) or \"all\".\n"
          "                    The modes: allreduce, broadcast, allgather_base,\n"
          "                    coalesced, pipelined, pingpong, msgrate, overlap,\n"
          "                    responsiveness, wakeups, idle, scale, cuda (device\n"
          "                    memory; in CUDA builds, needs a GPU)\n"
          "  --min BYTES       smallest size of a sweep (default: the element size)\n"
          "  --max BYTES       largest size (default 64M; coalesced 16M; msgrate 64K)\n"
          "  --iters N         operations per repetition (default: 1000, fewer above 64K)\n"
          "  --reps R          repetitions; medians are reported (default 7)\n"
          "  --json            one JSON object instead of tables\n"
          "  --json-out FILE   the tables, and the JSON of the same run in FILE\n"
          "  --tensors T       coalesced: tensors per set (default 64)\n"
          "  --ops-count N     pipelined, wakeups: operations queued (default 10000)\n"
          "  --msg BYTES       pipelined, wakeups: allreduce size (default 1K)\n"
          "  --window W        msgrate: messages in flight (default 64)\n"
          "  --coll-bytes B    overlap (default 16M), responsiveness (default 64M)\n"
          "  --colls C         collectives per repetition (overlap 20, responsiveness 4)\n"
          "  --timer-us US     responsiveness: timer period (default 1000)\n"
          "  --idle-ms MS      idle: each measured window (default 500)\n"
          "  --settle-ms MS    idle: wait before the window opens (default 5)\n"
          "  --groups G        idle, scale: groups alive at once (default 64)\n"
          "  --pending P       scale: receives left pending (default 10000)\n"
          "  --pending-tags T  scale: the pending receives' tags, one (default) or distinct\n"
          "BYTES take K, M, G suffixes (powers of 1024).\n");
}

static int parse_size(const char *s, size_t *out) {
  char *end;
  unsigned long long v = strtoull(s, &end, 0);
  switch (*end) {
  case 'k': case 'K': v <<= 10; end++; break;
  case 'm': case 'M': v <<= 20; end++; break;
  case 'g': case 'G': v <<= 30; end++; break;
  default: break;
  }
  if (*end == 'i' || *end == 'B')
    end += strspn(end, "iB");
  if (end == s || *end)
    return -1;
  *out = (size_t)v;
  return 0;
}

static const bench_mode_t *find_mode(const char *name, size_t len) {
  for (int i = 0; i < NMODES; i++)
    if ((strlen(modes[i].name) == len && strncmp(modes[i].name, name, len) == 0) ||
        (modes[i].alias && strlen(modes[i].alias) == len &&
         strncmp(modes[i].alias, name, len) == 0))
      return &modes[i];
  return NULL;
}

/* Fills run[] with the modes named in list, in the order of modes[]
 * for "default" and "all", else in the order given. */
static int select_modes(const char *list, const bench_mode_t **run, int *nrun) {
  *nrun = 0;
  for (const char *p = list; *p;) {
    size_t len = strcspn(p, ",");
    if (len == 7 && strncmp(p, "default", 7) == 0) {
      for (int i = 0; i < NMODES; i++)
        if (modes[i].in_default && *nrun < 64)
          run[(*nrun)++] = &modes[i];
    } else if (len == 3 && strncmp(p, "all", 3) == 0) {
      for (int i = 0; i < NMODES && *nrun < 64; i++)
        run[(*nrun)++] = &modes[i];
    } else if (len > 0) {
      const bench_mode_t *m = find_mode(p, len);
      if (!m) {
        fprintf(stderr, "evmpi-bench: unknown --op %.*s\n", (int)len, p);
        return -1;
      }
      if (*nrun < 64)
        run[(*nrun)++] = m;
    }
    p += len;
    if (*p == ',')
      p++;
  }
  return *nrun > 0 ? 0 : -1;
}

static int parse(int argc, char **argv, options_t *o) {
  static const struct option longopts[] = {
      {"op", required_argument, NULL, 'o'},
      {"min", required_argument, NULL, 'm'},
      {"max", required_argument, NULL, 'M'},
      {"iters", required_argument, NULL, 'i'},
      {"reps", required_argument, NULL, 'r'},
      {"json", no_argument, NULL, 'j'},
      {"json-out", required_argument, NULL, 'J'},
      {"tensors", required_argument, NULL, 't'},
      {"ops-count", required_argument, NULL, 'n'},
      {"msg", required_argument, NULL, 's'},
      {"window", required_argument, NULL, 'w'},
      {"coll-bytes", required_argument, NULL, 'c'},
      {"colls", required_argument, NULL, 'C'},
      {"timer-us", required_argument, NULL, 'T'},
      {"idle-ms", required_argument, NULL, 'I'},
      {"settle-ms", required_argument, NULL, 'S'},
      {"groups", required_argument, NULL, 'g'},
      {"pending", required_argument, NULL, 'p'},
      {"pending-tags", required_argument, NULL, 'P'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  *o = (options_t){.ops = "default", .reps = 7, .tensors = 64};
  o->nops = 10000;
  o->msg_bytes = 1024;
  o->window = 64;
  o->timer_us = 1000;
  o->idle_ms = 500;
  o->settle_ms = 5;
  o->groups = 64;
  o->pending = 10000;
  int ch;
  while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    int bad = 0;
    switch (ch) {
    case 'o': o->ops = optarg; break;
    case 'm': bad = parse_size(optarg, &o->min_bytes); break;
    case 'M': bad = parse_size(optarg, &o->max_bytes); break;
    case 'i': o->iters = atoi(optarg); break;
    case 'r': o->reps = atoi(optarg); break;
    case 'j': o->json = true; break;
    case 'J': o->json_out = optarg; break;
    case 't': o->tensors = atoi(optarg); break;
    case 'n': o->nops = atoi(optarg); break;
    case 's': bad = parse_size(optarg, &o->msg_bytes); break;
    case 'w': o->window = atoi(optarg); break;
    case 'c': bad = parse_size(optarg, &o->coll_bytes); break;
    case 'C': o->colls = atoi(optarg); break;
    case 'T': o->timer_us = atoi(optarg); break;
    case 'I': o->idle_ms = atoi(optarg); break;
    case 'S': o->settle_ms = atoi(optarg); break;
    case 'g': o->groups = atoi(optarg); break;
    case 'p': o->pending = atoi(optarg); break;
    case 'P':
      if (strcmp(optarg, "one") != 0 && strcmp(optarg, "distinct") != 0) {
        fprintf(stderr, "evmpi-bench: --pending-tags %s: one or distinct\n", optarg);
        return -1;
      }
      o->pending_distinct = strcmp(optarg, "distinct") == 0;
      break;
    case 'h': usage(stdout); return 1;
    default: usage(stderr); return -1;
    }
    if (bad) {
      fprintf(stderr, "evmpi-bench: bad size %s\n", optarg);
      return -1;
    }
  }
  bool bad = optind < argc || o->reps < 1 || o->iters < 0 || o->tensors < 1 ||
             (o->max_bytes && o->max_bytes < o->min_bytes);
  bad = bad || o->nops < 1 || o->window < 1;
  bad = bad || o->colls < 0 || o->timer_us < 1;
  bad = bad || o->idle_ms < 1 || o->settle_ms < 0 || o->groups < 0 || o->pending < 0;
  if (bad) {
    usage(stderr);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  int provided;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  bench_t b = {0};
  int rc = parse(argc, argv, &b.o);
  const bench_mode_t *run[64];
  int nrun = 0;
  if (rc == 0 && select_modes(b.o.ops, run, &nrun) != 0)
    rc = -1;
  if (rc != 0) {
    MPI_Finalize();
    return rc > 0 ? 0 : 2;
  }
  if (provided < MPI_THREAD_MULTIPLE)
    die("MPI does not provide MPI_THREAD_MULTIPLE");
  MPI_Comm_rank(MPI_COMM_WORLD, &b.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &b.size);
  MPI_Comm_split(MPI_COMM_WORLD, b.rank < 2 ? 0 : MPI_UNDEFINED, b.rank, &b.pair);

  b.base = event_base_new();
  if (!b.base)
    die("event_base_new failed");
  check(evmpi_pg_create(b.base, NULL, 0, &b.pg));

  out_begin(&b);
  for (int i = 0; i < nrun; i++)
    run[i]->run(&b);
  out_end(&b);

  evmpi_pg_destroy(b.pg);
  event_base_free(b.base);
  if (b.pair != MPI_COMM_NULL)
    MPI_Comm_free(&b.pair);
  MPI_Finalize();
  return 0;
}
