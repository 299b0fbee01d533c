/*
 * mpi_env-internal.h: MPI initialised once, finalised once. Private to lib/;
 * names with a double underscore are hidden from the shared library.
 */
#ifndef EVMPI_MPI_ENV_INTERNAL_H
#define EVMPI_MPI_ENV_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

/* What MPI_Finalize (the application's, or evmpi's own at exit) has the
 * groups do first. The group layer (pg.c) gives it: mpi_env.c sits below
 * the groups and reaches them only through these. */
typedef struct {
  /* Stops every live group and waits for the teardowns under way, wait_ms
   * at most in all; false when one was still running. */
  bool (*stop_groups)(int wait_ms);
  /* Waits up to ms for the workers that broken groups left inside MPI to
   * leave it; false when some are still there. */
  bool (*wait_detached)(int ms);
  /* Whether a group was broken by a timeout: MPI_Finalize is then bounded. */
  bool (*any_broken)(void);
} evmpi_finalize_hooks_t;

/* Initialises MPI once (MPI_THREAD_MULTIPLE) and hooks MPI_Finalize;
 * hooks are kept from the first call. */
int evmpi__mpi_ensure_init(const evmpi_finalize_hooks_t *hooks);
/* EVMPI_EXIT_WAIT_MS, process-wide: set by each group created with it
 * set (options.c resolves it), read at MPI_Finalize. */
void evmpi__mpi_set_exit_wait_ms(int ms);
int evmpi__mpi_exit_wait_ms(void);

#endif /* EVMPI_MPI_ENV_INTERNAL_H */
