/* env.c: parsing the environment variables a group reads when it is
 * created (EVMPI_PIECE, EVMPI_LOOP_*, EVMPI_CUDA_*). Each caller names its
 * variable in its own error message. */
#include "evmpi-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int evmpi__env_tristate(const char *value, int def) {
  if (!value || !*value || strcmp(value, "auto") == 0)
    return def;
  if (strcmp(value, "0") == 0)
    return 0;
  if (strcmp(value, "1") == 0)
    return 1;
  return -1;
}

size_t evmpi__env_bytes(const char *s) {
  errno = 0;
  char *end = NULL;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || s[0] == '-')
    return 0;
  unsigned shift = 0;
  if (*end == 'K' || *end == 'k')
    shift = 10, end++;
  else if (*end == 'M' || *end == 'm')
    shift = 20, end++;
  else if (*end == 'G' || *end == 'g')
    shift = 30, end++;
  if (*end || v > (SIZE_MAX >> shift))
    return 0;
  return (size_t)v << shift;
}

bool evmpi__env_uint(const char *s, uint64_t max, uint64_t *out) {
  if (!s || !*s || s[0] < '0' || s[0] > '9')
    return false;
  errno = 0;
  char *end = NULL;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v > max)
    return false;
  *out = v;
  return true;
}
