/**
 * @file evmpi.h
 * @brief Asynchronous MPI collectives and point-to-point messages whose
 * completions are delivered to the application's own libevent loop.
 *
 * Threads and ownership, in short (doc/design.md has the long form):
 *  - A group has a worker thread that runs its collectives, one at a time,
 *    in submission order, and a poller thread that tests its pending sends
 *    and receives. Neither ever runs user code. A small collective that a
 *    callback submits while the worker is idle may run on the loop thread
 *    instead, after the callback returns, once every rank has reached it
 *    (evmpi_pg_options_set_loop_collectives).
 *  - Every callback (evmpi_work_on_complete, evmpi_future_then) runs on the
 *    thread that runs the group's event_base. A group created with a NULL
 *    base gets an internal loop thread, which then runs the callbacks; one
 *    created for an external loop (EVMPI_LOOP_EXTERNAL) runs them in
 *    evmpi_pg_dispatch, on the thread that calls it (poll, epoll, libuv
 *    with evmpi/uv.h, GLib with evmpi/glib.h, any loop).
 *  - Submitting is thread-safe. The caller owns every data buffer and keeps
 *    it alive (and does not touch it) until the work completes; evmpi copies
 *    the tensor descriptors, never the data.
 *  - Every function that can fail returns an int status (EVMPI_OK or one of
 *    the EVMPI_ERR_* codes). On failure nothing is queued and no object is
 *    created; evmpi_last_error() gives a message that names the operation
 *    and the offending argument.
 */
#ifndef EVMPI_H
#define EVMPI_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(EVMPI_BUILDING_LIBRARY) && defined(__GNUC__)
#define EVMPI_API __attribute__((visibility("default")))
#else
#define EVMPI_API
#endif

struct event_base; /* libevent */

/* ---- status ------------------------------------------------------------ */

/** Status codes. Every failing call also sets evmpi_last_error(). */
enum {
  EVMPI_OK = 0,
  EVMPI_ERR_INVALID = -1,     /**< bad argument: NULL, size or dtype mismatch, bad rank, not contiguous */
  EVMPI_ERR_UNSUPPORTED = -2, /**< well formed but not supported: dtype/op pair, device without support */
  EVMPI_ERR_MPI = -3,         /**< MPI returned an error; the message says which */
  EVMPI_ERR_TIMEOUT = -4,     /**< a wait or an operation ran out of time */
  EVMPI_ERR_ABORTED = -5,     /**< the work was aborted, or its group aborted, broke or was destroyed */
  EVMPI_ERR_NOMEM = -6,       /**< out of memory */
  EVMPI_ERR_CUDA = -7,        /**< a CUDA runtime call failed */
  EVMPI_ERR_STATE = -8,       /**< not valid now (a result asked for before completion) */
};

/** A short constant description of a status code ("invalid argument").
 * Never NULL: an unknown code gives "unknown evmpi status". Thread-safe. */
EVMPI_API const char *evmpi_strerror(int status);

/** The message of the last failed evmpi call made on this thread, naming the
 * operation and the offending value ("allreduce: tensor: dtype 99 is not a
 * valid evmpi_dtype_t"). "" when no call has failed on this thread. The
 * string is thread-local and valid until the next failing call on this
 * thread. */
EVMPI_API const char *evmpi_last_error(void);

/* ---- buffers ----------------------------------------------------------- */

/** Element types. The first seven are PyTorch's ProcessGroupMPI's. */
typedef enum {
  EVMPI_UINT8, EVMPI_INT8, EVMPI_INT16, EVMPI_INT32, EVMPI_INT64,
  EVMPI_FLOAT32, EVMPI_FLOAT64,
  EVMPI_UINT16, EVMPI_UINT32, EVMPI_UINT64,
  EVMPI_FLOAT16, EVMPI_BFLOAT16, EVMPI_BOOL,
  EVMPI_COMPLEX64, EVMPI_COMPLEX128,
} evmpi_dtype_t;

/** Size in bytes of one element of dtype; 0 for a value outside the enum. */
EVMPI_API size_t evmpi_dtype_size(evmpi_dtype_t dtype);

/** Reduction operators. The first four are PyTorch's ProcessGroupMPI's. */
typedef enum {
  EVMPI_SUM, EVMPI_PRODUCT, EVMPI_MIN, EVMPI_MAX,
  EVMPI_AVG, EVMPI_BAND, EVMPI_BOR, EVMPI_BXOR,
} evmpi_reduce_op_t;

/** The kind of memory a tensor's data is in. */
typedef enum { EVMPI_DEVICE_CPU, EVMPI_DEVICE_CUDA } evmpi_device_type_t;

/** Where a tensor's data lives. */
typedef struct {
  evmpi_device_type_t type; /**< host memory or a CUDA device */
  int index; /**< CUDA device ordinal; 0 for the CPU */
} evmpi_device_t;

/** The most dimensions a tensor descriptor holds. */
#define EVMPI_MAX_DIMS 8

/** A description of a caller-owned buffer. evmpi copies the descriptor when
 * an operation is submitted; the data stays the caller's. */
typedef struct evmpi_tensor {
  void *data;                      /**< the first element; NULL only when there are none */
  evmpi_dtype_t dtype;             /**< the element type */
  int ndim;                        /**< 0 = scalar (one element); at most EVMPI_MAX_DIMS */
  int64_t shape[EVMPI_MAX_DIMS];   /**< each >= 0 */
  int64_t strides[EVMPI_MAX_DIMS]; /**< in elements; all zero = contiguous */
  evmpi_device_t device;           /**< where data lives (all zero: the CPU) */
} evmpi_tensor_t;

/** A 1-D contiguous CPU tensor over count elements at data. Pure: checks
 * nothing (operations check the tensors they are given). */
EVMPI_API evmpi_tensor_t evmpi_tensor_flat(void *data, evmpi_dtype_t dtype, int64_t count);

/** The number of elements: the product of the shape, 1 for ndim 0. Returns
 * -1 for NULL, an ndim outside 0..EVMPI_MAX_DIMS or a negative dimension. */
EVMPI_API int64_t evmpi_tensor_numel(const evmpi_tensor_t *tensor);

/* ---- CUDA device buffers ------------------------------------------------ */

/** How a group moves tensors whose data is on a CUDA device
 * (device.type == EVMPI_DEVICE_CUDA); evmpi_pg_cuda_path() tells.
 *
 * Every operation accepts device tensors. All tensors of one operation must
 * be on one device (EVMPI_ERR_INVALID otherwise, naming the first that is
 * not); device.index must be a device this process sees, and data must be
 * memory of that device (cudaMalloc or managed memory), or the operation is
 * refused with EVMPI_ERR_INVALID. A device tensor's data must be ready when
 * the operation is submitted: evmpi copies on streams of its own and does
 * not wait for the application's streams (synchronise them first).
 *
 * The path is chosen when a group is created, from these environment
 * variables:
 *  - EVMPI_CUDA_AWARE: unset or "auto" asks the MPI (Open MPI's
 *    MPIX_Query_cuda_support); "1" trusts that the MPI takes device
 *    pointers; "0" stages even where it would.
 *  - EVMPI_CUDA_STAGING: "0" refuses device tensors where the MPI is not
 *    CUDA-aware, as PyTorch's MPI backend does; unset or "1" stages.
 *  - EVMPI_CUDA_CHUNK: bytes per pipeline chunk of a staged allreduce,
 *    reduce or broadcast: a power of two from 16 to 1G (default 4M; K, M
 *    and G suffixes), raised to 4 x EVMPI_PIECE (the largest message sent
 *    whole, and a broadcast's piece; see evmpi_pg_create) when smaller,
 *    so that a device tensor is cut where a host tensor on another rank
 *    is. Any other value makes evmpi_pg_create fail.
 */
typedef enum {
  EVMPI_CUDA_NONE,    /**< built without CUDA: device tensors fail with EVMPI_ERR_UNSUPPORTED */
  EVMPI_CUDA_REFUSED, /**< the MPI is not CUDA-aware and EVMPI_CUDA_STAGING=0: device tensors fail with EVMPI_ERR_UNSUPPORTED */
  EVMPI_CUDA_STAGED,  /**< through pinned host buffers owned by the group, copies on the group's streams, large tensors in pipelined chunks */
  EVMPI_CUDA_DIRECT,  /**< device pointers go straight to a CUDA-aware MPI, with the tensor's device current on the calling thread */
} evmpi_cuda_path_t;

/* ---- groups ------------------------------------------------------------ */

/** A process group: an opaque handle from evmpi_pg_create. */
typedef struct evmpi_pg evmpi_pg_t;
/** One submitted operation: an opaque, reference-counted handle. */
typedef struct evmpi_work evmpi_work_t;
/** The result of a work, or of a join: an opaque, reference-counted handle. */
typedef struct evmpi_future evmpi_future_t;

/** Creates a process group. Collective over MPI_COMM_WORLD: every world rank
 * calls it with the same ranks.
 *
 * Initialises MPI (MPI_Init_thread, MPI_THREAD_MULTIPLE) on first use if the
 * application has not; then MPI_Finalize runs at exit. If the application
 * initialised MPI itself, it must have asked for MPI_THREAD_MULTIPLE (the
 * worker and poller threads call MPI at the same time) and finalises MPI
 * itself, after destroying its groups.
 *
 * base: the loop on which callbacks run (the caller keeps it alive until
 * evmpi_pg_destroy returns); NULL = an internal loop thread owned by the
 * group. ranks: NULL (nranks ignored) for MPI_COMM_WORLD; otherwise nranks
 * distinct world ranks, in the order that gives the new group's ranks. A
 * caller that is not among them gets EVMPI_OK with *pg == NULL.
 *
 * Allreduces and reduces larger than 4 x EVMPI_PIECE go to MPI in pieces
 * of EVMPI_PIECE bytes (read here; default 1M, a power of two from 16 to
 * 1G, K/M/G suffixes), broadcasts in pieces of 4 x EVMPI_PIECE (at most
 * 1 GiB), with the worker yielding its core to the loop thread between
 * pieces: Open MPI reduces a few MiB at a time much faster than tens of
 * MiB at once, and the loop is not shut out for a whole message. A power
 * of two holds whole elements of every dtype and is cut alike by host
 * ranks and by ranks staging a CUDA tensor. EVMPI_PIECE must be the same
 * on every rank of the group; 256M sends tensors up to 1 GiB whole. While
 * the group is quiet on every rank (no send or receive pending on it, none
 * for 10 ms, as the ranks tell each other at the arrival gate), its
 * allreduces and reduces of up to 16 x EVMPI_PIECE go in pieces of
 * 4 x EVMPI_PIECE instead: fewer calls, and no loop thread waiting for
 * its messages in between.
 *
 * After delivering completions the loop thread polls for the next ones
 * for a while, so that a stream of replies needs no wake-up each:
 * EVMPI_LOOP_P2P_POLL_US (default 2000, 0..1000000) is how long it goes on
 * polling without a completion while sends and receives complete in a
 * stream (the last two within that time of each other; after one that
 * came alone, at most 200 us), and EVMPI_LOOP_HOLD_US (default 500,
 * 1..1000000) the most one wake-up holds the loop before the base's other
 * events run. A stream that outlasts the hold lets the other events run,
 * then goes on polling. While messages flow less than the window apart the
 * loop thread keeps a core busy, as a blocking MPI call does (it shares
 * the core by the scheduler's fairness, and yields after each empty poll
 * while a collective is in flight); a lower window trades large-message
 * and TCP round trips for that CPU
 * (doc/performance.md has the figures).
 *
 * Every one of these, and the other settings (EVMPI_TIMEOUT_MS,
 * EVMPI_DEBUG, EVMPI_TIMELINE, EVMPI_CUDA_*, EVMPI_EXIT_WAIT_MS), can also
 * be set in code with evmpi_pg_create_with and an options object;
 * doc/settings.md lists them all. evmpi_pg_create is
 * evmpi_pg_create_with with NULL options: the defaults and the
 * environment.
 *
 * Errors: EVMPI_ERR_INVALID (pg NULL, nranks < 1, a rank out of range or
 * repeated, any setting's variable (EVMPI_PIECE, EVMPI_LOOP_*,
 * EVMPI_CUDA_*, EVMPI_TIMEOUT_MS, EVMPI_EXIT_WAIT_MS) malformed or out of
 * range, naming the variable and its value),
 * EVMPI_ERR_MPI (MPI initialisation or communicator creation failed, or
 * MPI's threading level is below MPI_THREAD_MULTIPLE), EVMPI_ERR_NOMEM. */
EVMPI_API int evmpi_pg_create(struct event_base *base, const int *ranks, int nranks,
                              evmpi_pg_t **pg);

/** A group over a communicator the application already has. The group
 * works on its own duplicate (MPI_Comm_dup, so collective over comm) with
 * MPI_ERRORS_RETURN; comm stays the caller's. Errors as evmpi_pg_create,
 * plus EVMPI_ERR_INVALID for MPI_COMM_NULL. */
EVMPI_API int evmpi_pg_create_from_comm(struct event_base *base, MPI_Comm comm, evmpi_pg_t **pg);

/** A group over some world ranks, created by those ranks only
 * (MPI_Comm_create_group): unlike evmpi_pg_create, the other ranks do not
 * call it and are not waited for, so a subgroup can be made while they
 * run other work, or never hear of it. Every member calls it with the
 * same ranks in the same order (the order gives the new group's ranks),
 * and members that make several groups over overlapping sets of ranks
 * make them in the same order, as with collectives. MPI is initialised
 * as by evmpi_pg_create; base as there. The group works on a duplicate
 * of the new communicator, with MPI_ERRORS_RETURN.
 *
 * Errors: EVMPI_ERR_INVALID (pg NULL, ranks NULL, nranks outside
 * 1..world size, a rank out of range or repeated, or the calling rank not
 * among ranks: only members call it; each naming the argument),
 * EVMPI_ERR_MPI (MPI initialisation or communicator creation failed, MPI
 * below MPI_THREAD_MULTIPLE), and the errors of evmpi_pg_create for the
 * environment variables it reads, EVMPI_ERR_NOMEM. On error *pg is NULL
 * and nothing is left behind. */
EVMPI_API int evmpi_pg_create_members(struct event_base *base, const int *ranks, int nranks,
                                      evmpi_pg_t **pg);

/* ---- options ------------------------------------------------------------ */

/** The settings a group is created with: an opaque object, made with
 * evmpi_pg_options_new, filled with the setters below and given to
 * evmpi_pg_create_with. Every tunable of evmpi is one row of a table
 * (doc/settings.md lists it: name, default, range, meaning), and each has
 * an environment variable that overrides what the options say, unless
 * evmpi_pg_options_set_ignore_env is set. The options are read when a
 * group is created and may be freed, changed or reused right after. Not
 * thread-safe: one thread fills one options object (any number of threads
 * may create groups from it once it is filled). */
typedef struct evmpi_pg_options evmpi_pg_options_t;

/** evmpi_pg_options_set_debug's levels (EVMPI_DEBUG). */
typedef enum {
  EVMPI_DEBUG_OFF,    /**< no checks (the default) */
  EVMPI_DEBUG_DETAIL, /**< the ranks compare each collective before it runs */
} evmpi_debug_t;

/** evmpi_pg_options_set_cuda_aware's values (EVMPI_CUDA_AWARE). */
typedef enum {
  EVMPI_CUDA_AWARE_NO = 0,   /**< stage device tensors even where the MPI takes them */
  EVMPI_CUDA_AWARE_YES = 1,  /**< trust that the MPI takes device pointers */
  EVMPI_CUDA_AWARE_AUTO = 2, /**< ask the MPI (the default) */
} evmpi_cuda_aware_t;

/** Which loop runs a group's callbacks (evmpi_pg_options_set_loop). */
typedef enum {
  /** The base given to the create function runs them, or, with a NULL
   * base, a loop thread of the group's own. */
  EVMPI_LOOP_DEFAULT,
  /** No loop: the application watches evmpi_pg_fd and calls
   * evmpi_pg_dispatch (or an adapter does: include/evmpi/uv.h,
   * include/evmpi/glib.h). The create function's base must be NULL. */
  EVMPI_LOOP_EXTERNAL,
} evmpi_loop_t;

/** Makes an options object holding every default; free it with
 * evmpi_pg_options_free. Errors: EVMPI_ERR_INVALID (opts NULL),
 * EVMPI_ERR_NOMEM. */
EVMPI_API int evmpi_pg_options_new(evmpi_pg_options_t **opts);
/** Frees opts; NULL is a no-op. Groups created from it are not affected. */
EVMPI_API void evmpi_pg_options_free(evmpi_pg_options_t *opts);

/** @name Options setters
 * Each sets one row of the settings table (its variable in brackets) and
 * returns EVMPI_OK, or EVMPI_ERR_INVALID with opts unchanged for a NULL
 * opts or a value outside the row's range; the message names the setter,
 * the value, the range and the variable ("pg_options_set_piece_bytes: 24
 * is not a power of two from 16 to 1073741824 bytes (K, M and G suffixes
 * allowed) (EVMPI_PIECE)"). The environment variable, when set and not
 * ignored, wins over the setter at creation. */
/** @{ */
/** The group's operation timeout (EVMPI_TIMEOUT_MS, 0..INT_MAX, default 0
 * = none), as evmpi_pg_set_timeout right after creation. */
EVMPI_API int evmpi_pg_options_set_timeout_ms(evmpi_pg_options_t *opts, int64_t ms);
/** The mismatched-collective check (EVMPI_DEBUG; the same on every rank of
 * the group). */
EVMPI_API int evmpi_pg_options_set_debug(evmpi_pg_options_t *opts, evmpi_debug_t level);
/** Whether collectives pass the arrival gate (EVMPI_ARRIVAL_GATE, 0 or 1,
 * default 1; the same on every rank of the group): with it, a collective
 * that waits for a late peer sleeps instead of spinning in MPI, at the
 * price of a few microseconds on each small collective run one at a time
 * (doc/performance.md; doc/design.md, "Arrival gate"). */
EVMPI_API int evmpi_pg_options_set_arrival_gate(evmpi_pg_options_t *opts, int on);
/** Whether small collectives may run on the loop thread
 * (EVMPI_LOOP_COLLECTIVES, 0 or 1, default 1). With 1, a collective of at
 * most 64 KiB of host memory that one of the group's callbacks submits
 * while the worker is idle is run by the loop thread itself, once every
 * rank has reached the collective's arrival gate (tested for up to 30 us;
 * otherwise it goes to the worker with its gate posted): a chain of small
 * collectives then needs no hand-off to the worker and back. The loop is
 * held for the blocking call, which every rank has already reached. Needs
 * the arrival gate on (evmpi_pg_options_set_arrival_gate) in groups of more
 * than one rank; each rank may choose its own value (the MPI calls are the
 * same either way). EVMPI_ERR_INVALID for other values. */
EVMPI_API int evmpi_pg_options_set_loop_collectives(evmpi_pg_options_t *opts, int on);
/** The longest the poller thread sleeps between tests of sends and receives
 * that nothing has happened to for a while (EVMPI_P2P_IDLE_POLL_MS,
 * 1..1000 ms, default 20): a receive left posted costs one wake-up this often
 * (each a timer wake-up, a context switch and two MPI_Testsome calls), and a
 * message that ends a quiet spell is seen at most this late, within an
 * eighth of the spell after a shorter one. Lower it where the first
 * message after a long quiet spell must be seen sooner, at the price of
 * CPU while idle (doc/performance.md has both). EVMPI_ERR_INVALID outside
 * the range. */
EVMPI_API int evmpi_pg_options_set_p2p_idle_poll_ms(evmpi_pg_options_t *opts, int64_t ms);
/** The longest a collective waiting for a late peer sleeps between tests
 * of its arrival gate (EVMPI_COLL_IDLE_POLL_US, 1..1000000 us, default
 * 1000), on whichever thread waits (the worker's, or the loop thread's for
 * a collective it runs itself, which hands a gate not passed within 30 us
 * to the worker): a collective left waiting costs one wake-up this often
 * (a timer, a context switch and two tests), and completes at most about
 * this late after the last peer reaches the gate, within an eighth of the
 * wait after a shorter one. Lower it for a faster start after a long
 * wait, at the price of CPU while waiting (doc/performance.md has both);
 * each rank may choose its own. EVMPI_ERR_INVALID outside the range. */
EVMPI_API int evmpi_pg_options_set_coll_idle_poll_us(evmpi_pg_options_t *opts, int64_t us);
/** The most bytes of allreduces fused into one MPI_Allreduce
 * (EVMPI_COLL_FUSE_BYTES, 0..16 MiB, default 64 KiB; 0 = never): the
 * worker packs allreduces queued back to back, of one dtype and one op,
 * which every rank holds (its last arrival gate says so), into a buffer of
 * its own and reduces them with one call, so a burst of small allreduces
 * costs MPI one call per set. Their callbacks still run one per work, in
 * submission order, once the set is done. A float sum may differ in its
 * last bits from the same allreduce run alone (MPI may reduce a longer
 * buffer in another order); it is the same on every rank. The same value
 * on every rank of the group, as the calls must match. EVMPI_ERR_INVALID
 * outside the range. */
EVMPI_API int evmpi_pg_options_set_coll_fuse_bytes(evmpi_pg_options_t *opts, size_t bytes);
/** A Chrome trace of the group's operations (EVMPI_TIMELINE; NULL or ""
 * = none; at most 4095 bytes). Process-wide file: the first group created
 * with a path opens it, "%r" in it becomes the world rank; later groups
 * with a path write to that same file. A file that cannot be opened is
 * reported on stderr, and the group works without it. */
EVMPI_API int evmpi_pg_options_set_timeline(evmpi_pg_options_t *opts, const char *path);
/** The piece size of large allreduces, reduces and broadcasts
 * (EVMPI_PIECE; a power of two from 16 to 1 GiB, default 1 MiB; the same
 * on every rank: see evmpi_pg_create). */
EVMPI_API int evmpi_pg_options_set_piece_bytes(evmpi_pg_options_t *opts, size_t bytes);
/** How long the loop thread polls on while sends and receives complete in
 * a stream (EVMPI_LOOP_P2P_POLL_US, 0..1000000, default 2000; see
 * evmpi_pg_create). */
EVMPI_API int evmpi_pg_options_set_loop_p2p_poll_us(evmpi_pg_options_t *opts, int64_t us);
/** The most one wake-up holds the loop (EVMPI_LOOP_HOLD_US, 1..1000000,
 * default 500; see evmpi_pg_create). */
EVMPI_API int evmpi_pg_options_set_loop_hold_us(evmpi_pg_options_t *opts, int64_t us);
/** Whether device pointers go to MPI (EVMPI_CUDA_AWARE; see
 * evmpi_cuda_path_t). Read by builds with CUDA only. */
EVMPI_API int evmpi_pg_options_set_cuda_aware(evmpi_pg_options_t *opts, evmpi_cuda_aware_t aware);
/** false refuses device tensors where the MPI is not CUDA-aware
 * (EVMPI_CUDA_STAGING; default true). Read by builds with CUDA only. */
EVMPI_API int evmpi_pg_options_set_cuda_staging(evmpi_pg_options_t *opts, bool staging);
/** Bytes per staged pipeline chunk (EVMPI_CUDA_CHUNK; a power of two from
 * 16 to 1 GiB, default 4 MiB, raised to 4 pieces). Read by builds with
 * CUDA only. */
EVMPI_API int evmpi_pg_options_set_cuda_chunk(evmpi_pg_options_t *opts, size_t bytes);
/** How long MPI_Finalize waits for live groups to stop
 * (EVMPI_EXIT_WAIT_MS, 0..3600000, default 5000; see
 * evmpi_pg_wait_destroyed). Process-wide: the last group created with it
 * set (here or in the environment) gives the process its value. */
EVMPI_API int evmpi_pg_options_set_exit_wait_ms(evmpi_pg_options_t *opts, int64_t ms);
/** true: groups created from opts read no environment variable at all;
 * every setting is the setter's or the default. */
EVMPI_API int evmpi_pg_options_set_ignore_env(evmpi_pg_options_t *opts, bool ignore);
/** Which loop runs the group's callbacks (evmpi_loop_t). EVMPI_ERR_INVALID
 * for a value outside the enum. */
EVMPI_API int evmpi_pg_options_set_loop(evmpi_pg_options_t *opts, evmpi_loop_t loop);
/** Sets the row whose variable is name from text, parsed exactly as the
 * environment's value would be ("EVMPI_PIECE", "2M"), for programs that
 * read their configuration from a file or a command line. Unlike the
 * environment, an unknown EVMPI_DEBUG value is refused. Errors:
 * EVMPI_ERR_INVALID (NULL arguments, an unknown name, a malformed or
 * out-of-range value: "pg_options_set: EVMPI_PIECE=24 is not a power of
 * two ..."). */
EVMPI_API int evmpi_pg_options_set(evmpi_pg_options_t *opts, const char *name, const char *value);
/** @} */

/** The value opts holds for the variable name (its default when not set),
 * written into buf (len bytes, truncated, always ended) as the variable
 * would spell it: "1048576", "auto", "detail", a path. Errors:
 * EVMPI_ERR_INVALID (NULL arguments, len 0, an unknown name). */
EVMPI_API int evmpi_pg_options_get(const evmpi_pg_options_t *opts, const char *name, char *buf,
                                   size_t len);

/** One row of the settings table (evmpi_setting_info). The strings are
 * evmpi's: constant, or valid on the calling thread until its next call
 * for the same row. */
typedef struct evmpi_setting_info {
  const char *name;          /**< the environment variable, "EVMPI_PIECE" */
  const char *setter;        /**< "evmpi_pg_options_set_piece_bytes" */
  const char *default_value; /**< as the variable spells it ("1048576"; "" for none) */
  const char *range;         /**< "a power of two from 16 to 1073741824 bytes ..." */
  const char *doc;           /**< what it does */
  bool process_wide;         /**< one value per process, not per group */
  bool cuda_only;            /**< read only by a build with CUDA */
} evmpi_setting_info_t;

/** The number of rows of the settings table. */
EVMPI_API size_t evmpi_settings_count(void);
/** Fills *info with row i (0..evmpi_settings_count() - 1). Errors:
 * EVMPI_ERR_INVALID (info NULL, i out of range). */
EVMPI_API int evmpi_setting_info(size_t i, evmpi_setting_info_t *info);

/** As evmpi_pg_create, with the settings of opts (NULL = the defaults and
 * the environment, which is what evmpi_pg_create does). Environment
 * variables override opts unless it ignores them. Errors as
 * evmpi_pg_create, plus EVMPI_ERR_INVALID for a base given with
 * EVMPI_LOOP_EXTERNAL. */
EVMPI_API int evmpi_pg_create_with(struct event_base *base, const int *ranks, int nranks,
                                   const evmpi_pg_options_t *opts, evmpi_pg_t **pg);
/** As evmpi_pg_create_from_comm, with the settings of opts. */
EVMPI_API int evmpi_pg_create_from_comm_with(struct event_base *base, MPI_Comm comm,
                                             const evmpi_pg_options_t *opts, evmpi_pg_t **pg);

/** The value the group runs with for the variable name, as
 * evmpi_pg_options_get writes it: resolved at creation from the defaults,
 * the options and the environment; EVMPI_TIMEOUT_MS is the timeout in
 * force now (evmpi_pg_set_timeout changes it) and EVMPI_EXIT_WAIT_MS the
 * process's. Errors: EVMPI_ERR_INVALID (NULL arguments, len 0, an unknown
 * name). */
EVMPI_API int evmpi_pg_get_setting(const evmpi_pg_t *pg, const char *name, char *buf, size_t len);

/* ---- driving a group from any loop -------------------------------------- */

/** The group's completion fd, for a loop other than libevent: it becomes
 * readable when completions are ready, and evmpi_pg_dispatch then runs
 * them. Create the group with evmpi_pg_options_set_loop(opts,
 * EVMPI_LOOP_EXTERNAL) and a NULL base, watch the fd for reading (poll,
 * epoll, select, a reactor of your own; include/evmpi/uv.h and
 * include/evmpi/glib.h do it for libuv and GLib), and call
 * evmpi_pg_dispatch on the loop's thread whenever it is readable.
 *
 * The fd is level-triggered: it stays readable until a dispatch has taken
 * what was posted, and a completion posted while or after a dispatch runs
 * makes it readable again, so an edge-triggered watcher (EPOLLET) loses
 * nothing either, as long as it dispatches on every notification. It may
 * be readable with nothing to run (dispatch then returns 0). The fd is
 * evmpi's: do not read, write or close it. It stays the same for the
 * group's life and is closed by the teardown, after the detach callback
 * (evmpi_pg_set_detach). Any thread may call this. Returns the fd (>= 0),
 * or EVMPI_ERR_INVALID (pg NULL), EVMPI_ERR_STATE (the teardown has
 * begun). */
EVMPI_API int evmpi_pg_fd(evmpi_pg_t *pg);

/** Runs the group's ready completions on the calling thread: every
 * callback of every work and future that has finished, in the order they
 * finished, in batches; after a batch, while operations are in flight, it
 * polls for the next completions for a short window (EVMPI_LOOP_HOLD_US
 * at most in all, see evmpi_pg_create), so that a chain of operations
 * needs no wake-up each. It never blocks for longer than that and never
 * waits for MPI.
 *
 * Call it on one thread, the loop's (the thread that runs the group's
 * callbacks is whichever calls this). Not re-entrant: from inside one of
 * the group's callbacks it returns EVMPI_ERR_STATE. Callbacks may submit
 * operations, release works and destroy the group: a destroy from a
 * callback runs when that batch is over, still inside this dispatch, which
 * then returns the count; the group is gone by then (its detach callback
 * has run and its fd is closed), so do not use the handle again. A group
 * with a libevent base may be dispatched too, on that base's thread.
 *
 * Returns the number of completions delivered (>= 0), or
 * EVMPI_ERR_INVALID (pg NULL), EVMPI_ERR_STATE (called from the group's
 * callback, from a thread other than the group's own loop thread of a
 * group created with a NULL base and EVMPI_LOOP_DEFAULT, or after the
 * teardown began). */
EVMPI_API int evmpi_pg_dispatch(evmpi_pg_t *pg);

/** Registers cb(pg, arg) to run once, when the group's teardown is about to
 * close the fd (evmpi_pg_fd): after the last callback, on the thread that
 * runs the teardown (the one calling evmpi_pg_destroy, or the dispatch
 * whose callback destroyed the group). An adapter stops watching the fd
 * there. cb must not call evmpi on pg. It does not run when MPI_Finalize
 * stops a live group (the fd then stays open until the process ends). One
 * at a time, so that two adapters cannot both take a group: cb NULL
 * removes it. For groups created with EVMPI_LOOP_EXTERNAL only. Errors:
 * EVMPI_ERR_INVALID (pg NULL), EVMPI_ERR_STATE (another loop, one is set
 * already, or the teardown has begun). */
EVMPI_API int evmpi_pg_set_detach(evmpi_pg_t *pg, void (*cb)(evmpi_pg_t *pg, void *arg),
                                  void *arg);

/** This process's rank in the group; -1 for NULL. */
EVMPI_API int evmpi_pg_rank(const evmpi_pg_t *pg);
/** The number of ranks in the group; -1 for NULL. */
EVMPI_API int evmpi_pg_size(const evmpi_pg_t *pg);
/** "mpi", as PyTorch's ProcessGroupMPI's backend is named. */
EVMPI_API const char *evmpi_pg_backend_name(const evmpi_pg_t *pg);

/** How this group moves CUDA tensors (see evmpi_cuda_path_t); chosen when
 * the group was created. EVMPI_CUDA_NONE for NULL and in a build without
 * CUDA. */
EVMPI_API evmpi_cuda_path_t evmpi_pg_cuda_path(const evmpi_pg_t *pg);

/** Waits for the queued collectives to finish, cancels pending receives
 * (they complete with EVMPI_ERR_ABORTED), waits for pending sends,
 * delivers every outstanding callback on the calling thread, stops the
 * group's threads and frees the group. Call it on the loop thread (or
 * while the loop does not run).
 *
 * Once: the first call takes the teardown; a later call on the same group
 * returns at once: from a callback that this destroy delivers, from
 * another thread while the teardown still runs or while that thread holds
 * a work of the group (which keeps the group's memory), or after
 * MPI_Finalize stopped the group. Once destroy has returned and no work
 * of the group is held, the handle is gone: it must not be used at all.
 *
 * From inside one of the group's completion callbacks, destroy is
 * deferred: the group is torn down as soon as the callbacks of the current
 * batch have run, on the loop thread. evmpi_pg_wait_destroyed waits for
 * such a teardown to end, and MPI_Finalize (evmpi's own at exit, or the
 * application's) waits for it too.
 *
 * Bounded by the group's timeout (evmpi_pg_set_timeout), when one is set:
 * what is still running or pending timeout_ms after destroy began is
 * given up and the group is broken. The running collective fails with
 * EVMPI_ERR_TIMEOUT, queued ones with EVMPI_ERR_ABORTED, and sends still
 * pending with EVMPI_ERR_TIMEOUT ("... MPI may still deliver it"). MPI
 * keeps using the buffers of the work given up this way: they must stay
 * valid until MPI_Finalize. Without a timeout, destroy waits as long as
 * the collectives and sends take.
 *
 * Works the caller still holds stay valid until released; callbacks
 * registered on them after this runs are called at once, on the
 * registering thread. NULL is a no-op. */
EVMPI_API void evmpi_pg_destroy(evmpi_pg_t *pg);

/** Waits until every group whose destroy has begun has been torn down:
 * the teardowns deferred by a destroy from a callback, which run on the
 * group's loop thread after evmpi_pg_destroy returned. An application that
 * initialised MPI itself may call it before MPI_Finalize (which waits up to
 * EVMPI_EXIT_WAIT_MS anyway). Returns EVMPI_OK, EVMPI_ERR_TIMEOUT when
 * one was still running after timeout_ms (0 = just look), or
 * EVMPI_ERR_INVALID for a negative timeout_ms.
 *
 * At MPI_Finalize, groups still alive are stopped before MPI goes: their
 * queued collectives, pending receives and sends complete with
 * EVMPI_ERR_ABORTED ("... MPI is being finalized"), none of their
 * callbacks run any more, and evmpi_pg_destroy on them is a no-op.
 * MPI_Finalize waits EVMPI_EXIT_WAIT_MS in all (default 5000, 0..3600000;
 * process-wide, given by the last group created with it set, in the
 * environment or evmpi_pg_options_set_exit_wait_ms) for those groups to
 * stop and deferred teardowns to end; a collective still stuck in MPI
 * after that (a broken group's) makes evmpi's own exit handler skip
 * MPI_Finalize. After any group broke (a collective, send or receive
 * timed out: a peer may be unreachable), evmpi's own exit handler runs
 * MPI_Finalize under a guard: if it has not returned within the exit wait,
 * the process ends with status 1 and a line on stderr, instead of hanging
 * across a dead link (doc/multihost.md). An MPI_Finalize the application
 * calls itself is not guarded. */
EVMPI_API int evmpi_pg_wait_destroyed(int timeout_ms);

/** Sets the operation timeout of the group's collectives: one that runs
 * (inside MPI) longer than timeout_ms fails with EVMPI_ERR_TIMEOUT and a
 * message naming it and its sequence number ("allreduce (#12) timed out
 * after 500 ms; the group is broken"). The group is then broken: queued
 * collectives complete with EVMPI_ERR_ABORTED, new operations fail at
 * once with EVMPI_ERR_ABORTED, and evmpi_pg_destroy returns without
 * waiting for the stuck call. MPI cannot cancel a collective: the worker
 * thread stays inside it until the peers arrive or the job ends, so the
 * timed-out work's buffers may still be written, and the group's
 * communicators are not freed. This timeout does not apply to sends and
 * receives (evmpi_pg_set_p2p_timeout gives them deadlines), but destroy
 * gives up on them after it (evmpi_pg_destroy). 0 = no limit (the default). Each collective's
 * deadline is fixed when it starts: a new value applies to collectives
 * that start after the call, never to the one running. Errors:
 * EVMPI_ERR_INVALID (pg NULL, timeout_ms negative), EVMPI_ERR_ABORTED
 * (destroy has begun), EVMPI_ERR_NOMEM (no watchdog thread). */
EVMPI_API int evmpi_pg_set_timeout(evmpi_pg_t *pg, int timeout_ms);

/** Fails every queued and pending work with EVMPI_ERR_ABORTED, then calls
 * MPI_Abort on the group's communicator, which ends the job. Does not
 * return unless MPI_Abort does. */
EVMPI_API void evmpi_pg_abort(evmpi_pg_t *pg);

/** @name Operations
 * Each returns EVMPI_OK and a new work in *work (the caller holds one
 * reference and releases it with evmpi_work_release), or an error status
 * with *work == NULL and nothing queued. The caller keeps every data buffer
 * alive until the work completes; descriptor arrays may be freed as soon as
 * the call returns.
 *
 * Common errors: EVMPI_ERR_INVALID for a NULL pg, tensor or work pointer, a
 * malformed tensor (dtype outside the enum, ndim outside 0..8, a negative
 * dimension, NULL data with elements, strides that are not contiguous,
 * non-zero extents that multiply past INT64_MAX bytes even when another
 * is 0, more than 2^61 - 1 elements), sizes that only overflow in the
 * operation (a gather's, scatter's or allgather's tensor times the group
 * size, or a coalesced list's total, past INT64_MAX bytes), a
 * root or peer outside 0..size-1, a negative tag, tensors on different
 * devices, a CUDA device index this process does not see, or CUDA data
 * that is not memory of the named device; EVMPI_ERR_UNSUPPORTED for a
 * CUDA tensor in a build without CUDA or with staging turned off
 * (evmpi_cuda_path_t), or a dtype/op pair that makes no sense;
 * EVMPI_ERR_CUDA when the CUDA runtime fails (no device, no driver; the
 * message has the runtime's error); EVMPI_ERR_ABORTED when the group is being destroyed or is broken
 * (evmpi_pg_set_timeout);
 * EVMPI_ERR_NOMEM. The work itself may later fail with EVMPI_ERR_MPI (the
 * message names the MPI call and MPI's error string), EVMPI_ERR_CUDA (a
 * staging copy failed) or EVMPI_ERR_ABORTED.
 *
 * Collectives run on the group's worker thread in submission order (a
 * small one submitted by a callback may run on the loop thread, still in
 * order: evmpi_pg_options_set_loop_collectives); every rank of the group
 * must submit the same collectives in the same order.
 * Sends (and receives) of a group with the same peer and tag complete,
 * and have their callbacks run, in the order they were issued: MPI's
 * matching order. Receives from any source are ordered among themselves
 * per tag. Other sends and receives complete as MPI completes them.
 *
 * Any thread may submit. A submission that races evmpi_pg_destroy (from a
 * thread that holds a work of the group, which keeps its memory) returns
 * EVMPI_OK or EVMPI_ERR_ABORTED, never touches a freed communicator.
 * Lists "per rank" hold evmpi_pg_size(pg) tensors (C cannot check an
 * array's length: a shorter array is read past its end). Element counts
 * beyond INT_MAX work for every operation. */
/** @{ */

/** Broadcasts tensor from root to every rank ("mpi:broadcast"). Result:
 * the tensor. */
EVMPI_API int evmpi_broadcast(evmpi_pg_t *pg, evmpi_tensor_t *tensor, int root, evmpi_work_t **work);

/** Reduces tensor across the group, in place, on every rank
 * ("mpi:all_reduce"). Result: the tensor. EVMPI_AVG divides the sum by the
 * group size (floating and complex dtypes only). A tensor of at most 1 KiB,
 * in a group whose size is a power of two, in host memory on every rank,
 * is reduced with the messages of its arrival gate (doc/design.md,
 * "Arrival gate"): recursive doubling with MPI_Reduce_local and MPI's own
 * op, giving the same bits on every rank; a floating-point sum may round
 * differently from what MPI_Allreduce would give. */
EVMPI_API int evmpi_allreduce(evmpi_pg_t *pg, evmpi_tensor_t *tensor, evmpi_reduce_op_t op,
                              evmpi_work_t **work);

/** Reduces each of count tensors across the group, in place, in one
 * operation ("mpi:allreduce_coalesced"): tensors of one dtype are packed
 * into one buffer and reduced with one MPI call. Dtypes may differ; op
 * must be defined on each. Result: the count tensors. Errors as
 * evmpi_allreduce, plus EVMPI_ERR_INVALID for tensors NULL or count 0. */
EVMPI_API int evmpi_allreduce_coalesced(evmpi_pg_t *pg, evmpi_tensor_t *tensors, size_t count,
                                        evmpi_reduce_op_t op, evmpi_work_t **work);

/** Reduces tensor across the group onto root ("mpi:reduce"): the root's
 * tensor receives the result; other ranks' buffers are left as they were.
 * Result: the tensor. */
EVMPI_API int evmpi_reduce(evmpi_pg_t *pg, evmpi_tensor_t *tensor, evmpi_reduce_op_t op, int root,
                           evmpi_work_t **work);

/** Gathers every rank's input into outputs on every rank ("mpi:all_gather"):
 * outputs holds evmpi_pg_size(pg) tensors, each of the input's dtype and
 * element count; outputs[r] receives rank r's input. Result: the outputs.
 * EVMPI_ERR_INVALID names the first output whose dtype or size differs. */
EVMPI_API int evmpi_allgather(evmpi_pg_t *pg, evmpi_tensor_t *outputs, const evmpi_tensor_t *input,
                              evmpi_work_t **work);

/** As evmpi_allgather into one flat output of size * numel(input)
 * elements, rank r's input at element r * numel(input)
 * ("mpi:_allgather_base"). The input may be the output's own slot for this
 * rank (then gathered in place). Result: the output. */
EVMPI_API int evmpi_allgather_base(evmpi_pg_t *pg, evmpi_tensor_t *output,
                                   const evmpi_tensor_t *input, evmpi_work_t **work);

/** Several allgathers in one operation ("mpi:allgather_coalesced"):
 * outputs holds count groups of evmpi_pg_size(pg) tensors, group i
 * (outputs[i * size + r]) for inputs[i]. Result: all the outputs. */
EVMPI_API int evmpi_allgather_coalesced(evmpi_pg_t *pg, evmpi_tensor_t *outputs,
                                        const evmpi_tensor_t *inputs, size_t count,
                                        evmpi_work_t **work);

/** Gathers every rank's input onto root ("mpi:gather"): on the root,
 * outputs holds evmpi_pg_size(pg) tensors like the input and outputs[r]
 * receives rank r's; on other ranks outputs must be NULL
 * (EVMPI_ERR_INVALID otherwise). Result: the outputs on the root, nothing
 * elsewhere. */
EVMPI_API int evmpi_gather(evmpi_pg_t *pg, evmpi_tensor_t *outputs, const evmpi_tensor_t *input,
                           int root, evmpi_work_t **work);

/** Scatters root's inputs ("mpi:scatter"): on the root, inputs holds
 * evmpi_pg_size(pg) tensors like the output and rank r receives inputs[r];
 * on other ranks inputs must be NULL. Result: the output. */
EVMPI_API int evmpi_scatter(evmpi_pg_t *pg, evmpi_tensor_t *output, const evmpi_tensor_t *inputs,
                            int root, evmpi_work_t **work);

/** Reduces, then scatters ("mpi:reduce_scatter"): inputs holds
 * evmpi_pg_size(pg) tensors like the output; the output on rank r receives
 * the reduction over every rank of its inputs[r]. Result: the output. */
EVMPI_API int evmpi_reduce_scatter(evmpi_pg_t *pg, evmpi_tensor_t *output,
                                   const evmpi_tensor_t *inputs, evmpi_reduce_op_t op,
                                   evmpi_work_t **work);

/** Exchanges rows of dim 0 between all ranks ("mpi:all_to_all"). Split
 * sizes are counted in rows of dim 0, one per rank: input_splits[r] rows
 * of the input go to rank r (in order), output_splits[r] rows of the
 * output come from rank r. NULL splits mean an equal split, which needs
 * dim 0 divisible by the group size; both NULL also needs the same number
 * of elements in input and output (MPI_Alltoall; otherwise
 * MPI_Alltoallv). Input and output need ndim >= 1, the same dtype, and
 * rows of the same size. EVMPI_ERR_INVALID for a negative split or splits
 * that do not sum to the rows. Result: the output. */
EVMPI_API int evmpi_alltoall_base(evmpi_pg_t *pg, evmpi_tensor_t *output,
                                  const evmpi_tensor_t *input, const int64_t *output_splits,
                                  const int64_t *input_splits, evmpi_work_t **work);

/** Exchanges a tensor with every rank ("mpi:all_to_all"): inputs[r] goes to
 * rank r, outputs[r] comes from rank r; both lists hold
 * evmpi_pg_size(pg) tensors of one dtype, and lengths may differ per peer
 * (outputs[r] on this rank must be as long as inputs[this rank] on rank
 * r, or the work fails with MPI_ERR_TRUNCATE). Result: the outputs. */
EVMPI_API int evmpi_alltoall(evmpi_pg_t *pg, evmpi_tensor_t *outputs, const evmpi_tensor_t *inputs,
                             evmpi_work_t **work);

/** Waits until every rank of the group has reached it ("mpi:barrier"). */
EVMPI_API int evmpi_barrier(evmpi_pg_t *pg, evmpi_work_t **work);

/** Sends tensor to group rank dst with tag >= 0 ("mpi:send"). Issued with
 * MPI_Isend at once; completion is noticed by the group's poller, so it is
 * not held back by a long collective. dst may be this rank. A staged CUDA
 * tensor is copied to a pinned host buffer on the calling thread before
 * the call returns (the device buffer may be reused at once). */
EVMPI_API int evmpi_send(evmpi_pg_t *pg, const evmpi_tensor_t *tensor, int dst, int tag,
                         evmpi_work_t **work);

/** Receives into tensor from group rank src with tag >= 0 ("mpi:recv").
 * A message larger than the tensor fails the work with EVMPI_ERR_MPI. A
 * staged CUDA tensor receives into a pinned host buffer; the bytes that
 * arrived are copied to the device (by the thread that sees the receive
 * complete: the poller, or the loop thread while it polls) before the work
 * completes. */
EVMPI_API int evmpi_recv(evmpi_pg_t *pg, evmpi_tensor_t *tensor, int src, int tag,
                         evmpi_work_t **work);

/** Receives from any rank of the group ("mpi:recvAnySource"); the sender is
 * evmpi_work_source_rank(work) once completed. */
EVMPI_API int evmpi_recv_anysource(evmpi_pg_t *pg, evmpi_tensor_t *tensor, int tag,
                                   evmpi_work_t **work);

/** Sets the group's point-to-point timeout: every send and receive issued
 * after this call gets a deadline timeout_ms after its issue; 0 = none (the
 * default). It is separate from the collectives' timeout
 * (evmpi_pg_set_timeout), which never applies to sends and receives: a
 * receive that waits for a command may rightly wait for ever, so a group
 * timeout alone gives it no deadline. evmpi_work_set_deadline overrides it
 * for one work. Works issued before the call keep the deadline they had.
 *
 * A send or receive still pending at its deadline completes with
 * EVMPI_ERR_TIMEOUT and a message naming the operation, its sequence
 * number, the peer and the tag: "recv (#12) from rank 1, tag 7 timed out
 * after 100 ms; cancelled, nothing arrived; the group is broken". A receive
 * is cancelled (one that matched a message whose transfer has not ended
 * cannot be, and is abandoned: MPI may still write its buffer); a send is
 * abandoned (MPI may still deliver it and read its buffer, so that buffer
 * must stay valid until MPI_Finalize or the process ends). Its callbacks
 * run as usual, on the loop thread.
 *
 * A missed deadline breaks the group, as a collective's timeout does: a
 * peer that misses one may be gone, and a request to it may be left inside
 * MPI. New operations of every kind then fail at once with
 * EVMPI_ERR_ABORTED ("send: the group is broken: recv (#12) from rank 1,
 * tag 7 timed out after 100 ms"); works already pending go on and may
 * still complete (or miss their own deadlines); evmpi_pg_destroy does not
 * wait for pending sends (they fail with EVMPI_ERR_ABORTED); and the exit
 * path knows a request may be left to a dead peer (see
 * evmpi_pg_wait_destroyed for what exit does with broken groups). A
 * deadline is a failure detector: to stop waiting for a message that may
 * rightly never come, and keep the group, cancel the receive from a timer
 * with evmpi_work_abort instead.
 *
 * Errors: EVMPI_ERR_INVALID (pg NULL, timeout_ms negative),
 * EVMPI_ERR_ABORTED (destroy has begun). */
EVMPI_API int evmpi_pg_set_p2p_timeout(evmpi_pg_t *pg, int timeout_ms);

/** Sets the deadline of one send or receive to timeout_ms after it was
 * issued (its evmpi_work_get_record started_ns), whatever the group's p2p
 * timeout gave it; 0 = no deadline for this work. A deadline already
 * passed fails the work at the poller's next look, within about a
 * millisecond. What a missed deadline does is described at
 * evmpi_pg_set_p2p_timeout. Thread-safe; the poller thread fails the work.
 *
 * Errors: EVMPI_ERR_INVALID (work NULL, timeout_ms negative, a
 * collective's work: collectives are bounded by evmpi_pg_set_timeout),
 * EVMPI_ERR_STATE (the work has completed already, or its request has and
 * it waits only for an older one of its peer and tag). */
EVMPI_API int evmpi_work_set_deadline(evmpi_work_t *work, int timeout_ms);

/* ---- work -------------------------------------------------------------- */

/** @} */

/** A work's completion callback: runs on the group's loop thread. */
typedef void (*evmpi_work_cb)(evmpi_work_t *work, void *arg);

/** Registers cb to run once, on the group's loop thread, after the work
 * completes (also when it has completed already: then on the loop's next
 * turn). Several callbacks run in registration order. The work stays valid
 * during cb; cb may release it, submit new work and destroy the group.
 * Errors: EVMPI_ERR_INVALID (work or cb NULL), EVMPI_ERR_NOMEM. */
EVMPI_API int evmpi_work_on_complete(evmpi_work_t *work, evmpi_work_cb cb, void *arg);

/** Blocks the calling thread up to timeout_ms (-1 = no limit, 0 = poll)
 * until the work completes. Does not need the loop to run (callbacks are
 * still delivered by the loop later). Returns EVMPI_OK, EVMPI_ERR_TIMEOUT
 * (the work goes on), the work's own error status, or EVMPI_ERR_INVALID. */
EVMPI_API int evmpi_work_wait(evmpi_work_t *work, int timeout_ms);

/** True once the work has completed, successfully or not. */
EVMPI_API bool evmpi_work_is_completed(evmpi_work_t *work);
/** True once the work has completed successfully; false before. */
EVMPI_API bool evmpi_work_is_success(evmpi_work_t *work);
/** EVMPI_OK once succeeded, its error status once failed, EVMPI_ERR_STATE
 * before completion, EVMPI_ERR_INVALID for NULL. */
EVMPI_API int evmpi_work_status(evmpi_work_t *work);
/** The failure message ("recv: MPI_Irecv failed: MPI_ERR_TRUNCATE: message
 * truncated"); NULL unless the work failed. Owned by the work. */
EVMPI_API const char *evmpi_work_error(evmpi_work_t *work);
/** The group rank a completed receive came from; -1 for other works and
 * before completion. */
EVMPI_API int evmpi_work_source_rank(evmpi_work_t *work);
/** The output tensors (PyTorch's ProcessGroupMPI's result()), as each operation lists under
 * "Result"; for recv the buffer, none for send and barrier. Sets *tensors to
 * an array owned by the work and returns its length; 0 and NULL before a
 * successful completion. */
EVMPI_API size_t evmpi_work_result(evmpi_work_t *work, const evmpi_tensor_t **tensors);
/** The operation's name as PyTorch's ProcessGroupMPI gives it ("mpi:all_reduce"). */
EVMPI_API const char *evmpi_work_name(evmpi_work_t *work);

/** When a work was queued, started and finished. */
typedef struct evmpi_work_record {
  uint64_t seq;        /**< per group, from 1, in submission order */
  int64_t queued_ns;   /**< CLOCK_MONOTONIC nanoseconds at submission */
  int64_t started_ns;  /**< when the worker began it (sends and receives: issued at
                            submission, so queued_ns; allreduces fused behind another,
                            evmpi_pg_options_set_coll_fuse_bytes: when the fused call
                            began); 0 = not yet */
  int64_t finished_ns; /**< when it completed (allreduces fused into one call share
                            it); 0 = not yet */
} evmpi_work_record_t;

/** Fills *rec with the work's record; callable at any time, from any
 * thread. Errors: EVMPI_ERR_INVALID (NULL). */
EVMPI_API int evmpi_work_get_record(evmpi_work_t *work, evmpi_work_record_t *rec);
/** The work's future, completed with the work. Owned by the work: valid
 * while the work is, or longer after evmpi_future_retain. */
EVMPI_API evmpi_future_t *evmpi_work_get_future(evmpi_work_t *work);
/** Cancels work that has not started: a collective still queued behind
 * others (removed from the queue), or a receive that has not matched a
 * message (MPI_Cancel). It completes with EVMPI_ERR_ABORTED and its
 * callbacks run as usual. Returns EVMPI_OK when cancelled; EVMPI_ERR_STATE
 * when it is too late (completed, running, a receive already matched, or a
 * send, which MPI cannot cancel reliably); EVMPI_ERR_INVALID for NULL.
 * Callable from any thread. On Open MPI it waits for evmpi's own
 * nonblocking MPI calls in progress on other threads (never for a
 * blocking one): Open MPI loses a message whose receive is cancelled while
 * another thread matches it, so evmpi never lets its own threads do both
 * at once. The application's own MPI calls and a running collective can
 * still make such a match (doc/design.md, "Open MPI's cancel race"). */
EVMPI_API int evmpi_work_abort(evmpi_work_t *work);
/** Drops the caller's reference. The work's operation goes on (buffers
 * must still live until it completes) and its callbacks still run. */
EVMPI_API void evmpi_work_release(evmpi_work_t *work);

/* ---- futures ----------------------------------------------------------- */

/** A future's continuation: runs on the loop thread. */
typedef void (*evmpi_future_cb)(evmpi_future_t *future, void *arg);

/** Registers cb to run once on the loop thread when the future is done
 * (on the loop's next turn if it is done already). For a future from
 * evmpi_future_all, the loop is that of the first future joined, or, if
 * its group is gone, that of another joined future's group; only when all
 * of them are gone does cb run on the thread whose destroy completed the
 * join.
 * Errors: EVMPI_ERR_INVALID (NULL), EVMPI_ERR_NOMEM. */
EVMPI_API int evmpi_future_then(evmpi_future_t *future, evmpi_future_cb cb, void *arg);
/** As evmpi_work_wait, for a future. */
EVMPI_API int evmpi_future_wait(evmpi_future_t *future, int timeout_ms);
/** True once the future is done. */
EVMPI_API bool evmpi_future_is_done(evmpi_future_t *future);
/** The value: the work's result tensors (none for a joined future). Sets
 * *tensors to an array owned by the future; 0 and NULL unless done and
 * successful. */
EVMPI_API size_t evmpi_future_value(evmpi_future_t *future, const evmpi_tensor_t **tensors);
/** The failure message; NULL unless the future failed. */
EVMPI_API const char *evmpi_future_error(evmpi_future_t *future);
/** EVMPI_OK once succeeded, the error status once failed, EVMPI_ERR_STATE
 * before. */
EVMPI_API int evmpi_future_status(evmpi_future_t *future);
/** A new future (the caller holds a reference) done when all count futures
 * are; it fails with the status and message of the first one, in array
 * order, that failed. The join holds references to the futures it joins
 * (and so to their works) until it is released: the caller may release
 * them at once. count 0 gives a future done at once, which then
 * needs no loop and runs its callbacks on the registering thread.
 * Errors: EVMPI_ERR_INVALID (NULL arguments), EVMPI_ERR_NOMEM. */
EVMPI_API int evmpi_future_all(evmpi_future_t *const *futures, size_t count, evmpi_future_t **all);
/** Takes a reference; a future of a work then keeps its work alive. */
EVMPI_API void evmpi_future_retain(evmpi_future_t *future);
/** Drops a reference taken with evmpi_future_retain or evmpi_future_all. */
EVMPI_API void evmpi_future_release(evmpi_future_t *future);

#ifdef __cplusplus
}
#endif

#endif /* EVMPI_H */
