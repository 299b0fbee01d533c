/* env.c: the one place evmpi reads the environment, and the two parsers
 * every variable goes through: sizes and durations. Which variable means
 * what, and its range, is options.c's table. */
#include "env-internal.h"

#include <errno.h>
#include <stdlib.h>

const char *evmpi__env_get(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

/* Digits only: strtoull would take a sign or leading blanks. */
static bool parse_digits(const char *s, unsigned long long *v, char **end) {
  if (!s || s[0] < '0' || s[0] > '9')
    return false;
  errno = 0;
  *v = strtoull(s, end, 10);
  return errno == 0;
}

bool evmpi__parse_size(const char *s, uint64_t max, uint64_t *out) {
  unsigned long long v;
  char *end = NULL;
  if (!parse_digits(s, &v, &end))
    return false;
  unsigned shift = 0;
  if (*end == 'K' || *end == 'k')
    shift = 10, end++;
  else if (*end == 'M' || *end == 'm')
    shift = 20, end++;
  else if (*end == 'G' || *end == 'g')
    shift = 30, end++;
  if (*end || v > (max >> shift))
    return false;
  *out = (uint64_t)v << shift;
  return true;
}

bool evmpi__parse_duration(const char *s, uint64_t max, uint64_t *out) {
  unsigned long long v;
  char *end = NULL;
  if (!parse_digits(s, &v, &end) || *end || v > max)
    return false;
  *out = v;
  return true;
}
