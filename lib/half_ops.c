/* half_ops.c: reductions on float16 and bfloat16, which MPI has no types or
 * ops for. Both travel as 16-bit words; these MPI_Op_create'd functions
 * widen to float, combine, and narrow back with round-to-nearest-even.
 * The loops are branch-free so that the compiler vectorises them, and on
 * x86-64 a second copy is built for CPUs with F16C/AVX2 (x86-64-v3),
 * chosen at load time. */
#include "half_ops-internal.h"

#include <pthread.h>

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define EVMPI_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define EVMPI_CLONES
#endif

/* ---- bfloat16: the upper half of a float32 ------------------------------ */

static inline float bf16_to_float(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  uint32_t nan = (u >> 16) | 0x40u; /* keep NaNs NaN (quiet) */
  return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

/* ---- float16: IEEE binary16 ----------------------------------------------- */

#if defined(__FLT16_MAX__)
typedef _Float16 evmpi_f16_t;
static inline float f16_to_float(uint16_t h) {
  evmpi_f16_t x;
  memcpy(&x, &h, sizeof h);
  return (float)x;
}
static inline uint16_t float_to_f16(float f) {
  evmpi_f16_t x = (evmpi_f16_t)f;
  uint16_t h;
  memcpy(&h, &x, sizeof h);
  return h;
}
#else
/* Portable conversions for compilers without _Float16. */
static inline float f16_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  float f;
  if (exp == 0) {
    f = ldexpf((float)man, -24);
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u |= sign;
    memcpy(&f, &u, sizeof f);
    return f;
  }
  uint32_t u = exp == 0x1f ? sign | 0x7f800000u | (man << 13)
                           : sign | ((exp + 112u) << 23) | (man << 13);
  memcpy(&f, &u, sizeof f);
  return f;
}
static inline uint16_t float_to_f16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  float a = fabsf(f);
  if (isnan(f))
    return sign | 0x7e00u;
  if (a >= 65520.0f)
    return sign | 0x7c00u;
  if (a < 6.103515625e-05f) /* subnormal: round to a multiple of 2^-24 */
    return sign | (uint16_t)nearbyintf(a * 16777216.0f);
  uint32_t v;
  memcpy(&v, &a, sizeof v);
  v += 0xfffu + ((v >> 13) & 1u);
  return sign | (uint16_t)(((v >> 13) - (112u << 10)) & 0x7fffu);
}
#endif

/* ---- the reduction kernels ----------------------------------------------- */

#define DEFINE_KERNEL(name, to_float, from_float, combine)                                      \
  EVMPI_CLONES static void name(void *in, void *inout, int *len, MPI_Datatype *dt) {            \
    (void)dt;                                                                                    \
    const uint16_t *a = in;                                                                      \
    uint16_t *b = inout;                                                                         \
    int n = *len;                                                                                \
    for (int i = 0; i < n; i++) {                                                                \
      float x = to_float(a[i]), y = to_float(b[i]);                                              \
      b[i] = from_float(combine);                                                                \
    }                                                                                            \
  }

DEFINE_KERNEL(f16_sum, f16_to_float, float_to_f16, x + y)
DEFINE_KERNEL(f16_prod, f16_to_float, float_to_f16, x * y)
DEFINE_KERNEL(f16_min, f16_to_float, float_to_f16, fminf(x, y))
DEFINE_KERNEL(f16_max, f16_to_float, float_to_f16, fmaxf(x, y))
DEFINE_KERNEL(bf16_sum, bf16_to_float, float_to_bf16, x + y)
DEFINE_KERNEL(bf16_prod, bf16_to_float, float_to_bf16, x * y)
DEFINE_KERNEL(bf16_min, bf16_to_float, float_to_bf16, fminf(x, y))
DEFINE_KERNEL(bf16_max, bf16_to_float, float_to_bf16, fmaxf(x, y))

static MPI_User_function *const kernels[2][4] = {
    {f16_sum, f16_prod, f16_min, f16_max},
    {bf16_sum, bf16_prod, bf16_min, bf16_max},
};
static MPI_Op ops[2][4];
static pthread_once_t ops_once = PTHREAD_ONCE_INIT;
static int ops_status = EVMPI_OK;

static void create_ops(void) {
  for (int t = 0; t < 2; t++)
    for (int o = 0; o < 4; o++)
      if (MPI_Op_create(kernels[t][o], 1, &ops[t][o]) != MPI_SUCCESS)
        ops_status = EVMPI_ERR_MPI;
}

int evmpi__half_op(evmpi_dtype_t dtype, evmpi_reduce_op_t op, MPI_Op *out) {
  int t = dtype == EVMPI_FLOAT16 ? 0 : 1;
  int o;
  switch (op) {
  case EVMPI_SUM: case EVMPI_AVG: o = 0; break;
  case EVMPI_PRODUCT: o = 1; break;
  case EVMPI_MIN: o = 2; break;
  case EVMPI_MAX: o = 3; break;
  default: return EVMPI_ERR_UNSUPPORTED;
  }
  pthread_once(&ops_once, create_ops);
  if (ops_status != EVMPI_OK)
    return ops_status;
  *out = ops[t][o];
  return EVMPI_OK;
}

void evmpi__half_divide(void *data, evmpi_dtype_t dtype, int64_t count, int divisor) {
  uint16_t *p = data;
  float d = (float)divisor;
  if (dtype == EVMPI_FLOAT16)
    for (int64_t i = 0; i < count; i++)
      p[i] = float_to_f16(f16_to_float(p[i]) / d);
  else
    for (int64_t i = 0; i < count; i++)
      p[i] = float_to_bf16(bf16_to_float(p[i]) / d);
}
