/* status.c: status codes, their text, and the per-thread last error. */
#include "status-internal.h"

#include <stdarg.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char last_error[512];

const char *evmpi_strerror(int status) {
  switch (status) {
  case EVMPI_OK: return "success";
  case EVMPI_ERR_INVALID: return "invalid argument";
  case EVMPI_ERR_UNSUPPORTED: return "not supported";
  case EVMPI_ERR_MPI: return "MPI error";
  case EVMPI_ERR_TIMEOUT: return "timed out";
  case EVMPI_ERR_ABORTED: return "aborted";
  case EVMPI_ERR_NOMEM: return "out of memory";
  case EVMPI_ERR_CUDA: return "CUDA error";
  case EVMPI_ERR_STATE: return "not valid in this state";
  default: return "unknown evmpi status";
  }
}

const char *evmpi_last_error(void) { return last_error; }

int evmpi__fail(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return status;
}

char *evmpi__asprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return NULL;
  char *s = malloc((size_t)n + 1);
  if (!s)
    return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

/* The standard's name of an error class, so that a message reads alike on
 * every MPI (Open MPI's strings start with it, MPICH's do not). */
static const char *error_class_name(int cls) {
  switch (cls) {
#define C(x) case x: return #x
  C(MPI_ERR_BUFFER); C(MPI_ERR_COUNT); C(MPI_ERR_TYPE); C(MPI_ERR_TAG); C(MPI_ERR_COMM);
  C(MPI_ERR_RANK); C(MPI_ERR_REQUEST); C(MPI_ERR_ROOT); C(MPI_ERR_GROUP); C(MPI_ERR_OP);
  C(MPI_ERR_TOPOLOGY); C(MPI_ERR_DIMS); C(MPI_ERR_ARG); C(MPI_ERR_UNKNOWN);
  C(MPI_ERR_TRUNCATE); C(MPI_ERR_OTHER); C(MPI_ERR_INTERN); C(MPI_ERR_IN_STATUS);
  C(MPI_ERR_PENDING); C(MPI_ERR_NO_MEM); C(MPI_ERR_SPAWN);
#undef C
  default: return NULL;
  }
}

void evmpi__mpi_error_text(int code, char *buf, size_t len) {
  char text[MPI_MAX_ERROR_STRING];
  int tlen = 0, cls = 0;
  if (MPI_Error_string(code, text, &tlen) != MPI_SUCCESS)
    snprintf(text, sizeof text, "unknown MPI error");
  if (MPI_Error_class(code, &cls) != MPI_SUCCESS)
    cls = code;
  const char *name = error_class_name(cls);
  if (name && strncmp(text, name, strlen(name)) != 0)
    snprintf(buf, len, "%s: %s (error class %d)", name, text, cls);
  else
    snprintf(buf, len, "%s (error class %d)", text, cls);
}
