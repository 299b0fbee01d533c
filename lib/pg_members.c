/* pg_members.c: a group created by its members only. evmpi_pg_create is
 * collective over MPI_COMM_WORLD (as PyTorch's new_group, whose MPI
 * backend hangs when a rank does not call it); MPI_Comm_create_group
 * (MPI-3) involves only the ranks of the new group, so a subgroup can be
 * made while the other ranks are busy elsewhere, or on other hosts that
 * never learn of it. The communicator then goes the way of the
 * application's own: evmpi_pg_create_from_comm duplicates it (collective
 * over the members only) and the group is opened on the duplicate. */
#include "pg-internal.h"
#include "status-internal.h"

#include <stdio.h>
#include <string.h>

/* MPI_Comm_create_group's tag over MPI_COMM_WORLD. Creations over
 * overlapping sets of ranks are told apart by their order (every common
 * member makes them in the same order, as with collectives), not by the
 * tag; a value of its own keeps them apart from the application's own
 * MPI_Comm_create_group calls with the usual small tags. */
#define MEMBERS_TAG 0x6576 /* "ev", below the 32767 every MPI allows */

static int check_members(const int *ranks, int nranks, int world, int me) {
  if (!ranks)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_create_members: ranks is NULL (use "
                       "evmpi_pg_create for the whole world)");
  if (nranks < 1 || nranks > world)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_create_members: nranks %d is outside 1..%d (the "
                       "world size)", nranks, world);
  int self = -1;
  for (int i = 0; i < nranks; i++) {
    if (ranks[i] < 0 || ranks[i] >= world)
      return evmpi__fail(EVMPI_ERR_INVALID, "pg_create_members: ranks[%d] = %d is outside 0..%d",
                         i, ranks[i], world - 1);
    for (int j = 0; j < i; j++)
      if (ranks[j] == ranks[i])
        return evmpi__fail(EVMPI_ERR_INVALID, "pg_create_members: rank %d appears twice "
                           "(ranks[%d] and ranks[%d])", ranks[i], j, i);
    if (ranks[i] == me)
      self = i;
  }
  if (self < 0)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_create_members: world rank %d is not among the "
                       "%d ranks: only the members call it", me, nranks);
  return EVMPI_OK;
}

int evmpi_pg_create_members(struct event_base *base, const int *ranks, int nranks,
                            evmpi_pg_t **pg) {
  if (!pg)
    return evmpi__fail(EVMPI_ERR_INVALID, "pg_create_members: pg is NULL");
  *pg = NULL;
  int rc = evmpi__pg_mpi_init();
  if (rc != EVMPI_OK)
    return rc;
  int world = 0, me = -1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  if ((rc = check_members(ranks, nranks, world, me)) != EVMPI_OK)
    return rc;
  MPI_Group world_group, group;
  MPI_Comm_group(MPI_COMM_WORLD, &world_group);
  rc = MPI_Group_incl(world_group, nranks, ranks, &group);
  MPI_Group_free(&world_group);
  char text[MPI_MAX_ERROR_STRING + 32];
  if (rc != MPI_SUCCESS) {
    evmpi__mpi_error_text(rc, text, sizeof text);
    return evmpi__fail(EVMPI_ERR_MPI, "pg_create_members: MPI_Group_incl failed: %s", text);
  }
  MPI_Comm comm = MPI_COMM_NULL;
  rc = MPI_Comm_create_group(MPI_COMM_WORLD, group, MEMBERS_TAG, &comm);
  MPI_Group_free(&group);
  if (rc != MPI_SUCCESS || comm == MPI_COMM_NULL) {
    evmpi__mpi_error_text(rc, text, sizeof text);
    return evmpi__fail(EVMPI_ERR_MPI, "pg_create_members: MPI_Comm_create_group failed: %s",
                       rc != MPI_SUCCESS ? text : "no communicator for a member");
  }
  rc = evmpi_pg_create_from_comm(base, comm, pg);
  MPI_Comm_free(&comm); /* the group works on its own duplicate */
  if (rc != EVMPI_OK) {
    /* The message names the operation the caller called. */
    char why[512];
    snprintf(why, sizeof why, "%s", evmpi_last_error());
    const char *from = "pg_create_from_comm: ";
    const char *rest = strncmp(why, from, strlen(from)) == 0 ? why + strlen(from) : why;
    return evmpi__fail(rc, "pg_create_members: %s", rest);
  }
  return EVMPI_OK;
}
