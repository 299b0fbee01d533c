// test_dtypes.cc: the whole dtype x reduce-op table through allreduce. Each
// accepted pair is checked against the reduction computed locally; each
// refused pair must fail with EVMPI_ERR_UNSUPPORTED before anything is
// queued. Rank 0 prints the table as tested.
#include "harness.h"

#include <event2/event.h>

#include <cmath>
#include <complex>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

const evmpi_dtype_t kDtypes[] = {
    EVMPI_UINT8,   EVMPI_INT8,    EVMPI_INT16,    EVMPI_INT32,  EVMPI_INT64,
    EVMPI_FLOAT32, EVMPI_FLOAT64, EVMPI_UINT16,   EVMPI_UINT32, EVMPI_UINT64,
    EVMPI_FLOAT16, EVMPI_BFLOAT16, EVMPI_BOOL,    EVMPI_COMPLEX64, EVMPI_COMPLEX128};
const char *const kDtypeNames[] = {"uint8",  "int8",    "int16",    "int32", "int64",
                                   "float32", "float64", "uint16",  "uint32", "uint64",
                                   "float16", "bfloat16", "bool",    "complex64", "complex128"};
const evmpi_reduce_op_t kOps[] = {EVMPI_SUM, EVMPI_PRODUCT, EVMPI_MIN,  EVMPI_MAX,
                                  EVMPI_AVG, EVMPI_BAND,    EVMPI_BOR, EVMPI_BXOR};
const char *const kOpNames[] = {"sum", "product", "min", "max", "avg", "band", "bor", "bxor"};

enum Kind { INT, FLOAT, HALF, BOOL, COMPLEX };

Kind kind(evmpi_dtype_t d) {
  switch (d) {
  case EVMPI_FLOAT32: case EVMPI_FLOAT64: return FLOAT;
  case EVMPI_FLOAT16: case EVMPI_BFLOAT16: return HALF;
  case EVMPI_BOOL: return BOOL;
  case EVMPI_COMPLEX64: case EVMPI_COMPLEX128: return COMPLEX;
  default: return INT;
  }
}

// The table the library promises.
bool defined(evmpi_dtype_t d, evmpi_reduce_op_t op) {
  switch (kind(d)) {
  case INT: return op != EVMPI_AVG;
  case FLOAT: case HALF: return op <= EVMPI_AVG;
  case BOOL: return op != EVMPI_AVG;
  case COMPLEX: return op == EVMPI_SUM || op == EVMPI_PRODUCT || op == EVMPI_AVG;
  }
  return false;
}

// float16 for the small values used here (normal numbers, rounded to
// nearest even), and back.
uint16_t to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  int exp = (int)((u >> 23) & 0xff) - 127 + 15;
  uint32_t man = u & 0x7fffffu;
  if (f == 0)
    return (uint16_t)sign;
  uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13);
  uint32_t rest = man & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
    h++;
  return (uint16_t)h;
}
float from_f16(uint16_t h) {
  int exp = (h >> 10) & 0x1f;
  float m = (float)(h & 0x3ff) / 1024.0f;
  float v = exp == 0 ? std::ldexp(m, -14) : std::ldexp(1.0f + m, exp - 15);
  return (h & 0x8000u) ? -v : v;
}
uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return (uint16_t)(u >> 16); // the values used are exact in bfloat16
}
float from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

using cplx = std::complex<double>;
const int kN = 4;

// Rank r's element i: small values, so products of 4 ranks fit int8.
cplx value(int r, int i, Kind k) {
  double re = (r + i) % 3 + 1;
  if (k == BOOL)
    return (r + i) % 2 == 0 ? 1 : 0;
  if (k == COMPLEX)
    return cplx(re, (r % 2) ? 1.0 : -0.5);
  return re;
}

void store(evmpi_dtype_t d, void *buf, int i, cplx v) {
  double x = v.real();
  switch (d) {
  case EVMPI_UINT8: static_cast<uint8_t *>(buf)[i] = (uint8_t)x; break;
  case EVMPI_INT8: static_cast<int8_t *>(buf)[i] = (int8_t)x; break;
  case EVMPI_INT16: static_cast<int16_t *>(buf)[i] = (int16_t)x; break;
  case EVMPI_INT32: static_cast<int32_t *>(buf)[i] = (int32_t)x; break;
  case EVMPI_INT64: static_cast<int64_t *>(buf)[i] = (int64_t)x; break;
  case EVMPI_UINT16: static_cast<uint16_t *>(buf)[i] = (uint16_t)x; break;
  case EVMPI_UINT32: static_cast<uint32_t *>(buf)[i] = (uint32_t)x; break;
  case EVMPI_UINT64: static_cast<uint64_t *>(buf)[i] = (uint64_t)x; break;
  case EVMPI_FLOAT32: static_cast<float *>(buf)[i] = (float)x; break;
  case EVMPI_FLOAT64: static_cast<double *>(buf)[i] = x; break;
  case EVMPI_FLOAT16: static_cast<uint16_t *>(buf)[i] = to_f16((float)x); break;
  case EVMPI_BFLOAT16: static_cast<uint16_t *>(buf)[i] = to_bf16((float)x); break;
  case EVMPI_BOOL: static_cast<bool *>(buf)[i] = x != 0; break;
  case EVMPI_COMPLEX64: static_cast<std::complex<float> *>(buf)[i] = std::complex<float>(v); break;
  case EVMPI_COMPLEX128: static_cast<cplx *>(buf)[i] = v; break;
  }
}

cplx load(evmpi_dtype_t d, const void *buf, int i) {
  switch (d) {
  case EVMPI_UINT8: return static_cast<const uint8_t *>(buf)[i];
  case EVMPI_INT8: return static_cast<const int8_t *>(buf)[i];
  case EVMPI_INT16: return static_cast<const int16_t *>(buf)[i];
  case EVMPI_INT32: return static_cast<const int32_t *>(buf)[i];
  case EVMPI_INT64: return (double)static_cast<const int64_t *>(buf)[i];
  case EVMPI_UINT16: return static_cast<const uint16_t *>(buf)[i];
  case EVMPI_UINT32: return static_cast<const uint32_t *>(buf)[i];
  case EVMPI_UINT64: return (double)static_cast<const uint64_t *>(buf)[i];
  case EVMPI_FLOAT32: return static_cast<const float *>(buf)[i];
  case EVMPI_FLOAT64: return static_cast<const double *>(buf)[i];
  case EVMPI_FLOAT16: return from_f16(static_cast<const uint16_t *>(buf)[i]);
  case EVMPI_BFLOAT16: return from_bf16(static_cast<const uint16_t *>(buf)[i]);
  case EVMPI_BOOL: return static_cast<const bool *>(buf)[i] ? 1 : 0;
  case EVMPI_COMPLEX64: return cplx(static_cast<const std::complex<float> *>(buf)[i]);
  case EVMPI_COMPLEX128: return static_cast<const cplx *>(buf)[i];
  }
  return 0;
}

cplx expected(evmpi_reduce_op_t op, Kind k, int size, int i) {
  cplx acc = value(0, i, k);
  for (int r = 1; r < size; r++) {
    cplx v = value(r, i, k);
    int64_t a = (int64_t)acc.real(), b = (int64_t)v.real();
    switch (op) {
    case EVMPI_SUM: case EVMPI_AVG: acc = k == BOOL ? cplx(a | b) : acc + v; break;
    case EVMPI_PRODUCT: acc = k == BOOL ? cplx(a & b) : acc * v; break;
    case EVMPI_MIN: acc = std::min(acc.real(), v.real()); break;
    case EVMPI_MAX: acc = std::max(acc.real(), v.real()); break;
    case EVMPI_BAND: acc = (double)(a & b); break;
    case EVMPI_BOR: acc = (double)(a | b); break;
    case EVMPI_BXOR: acc = (double)(a ^ b); break;
    }
  }
  if (op == EVMPI_AVG)
    acc /= size;
  return acc;
}

class Dtypes : public MpiTest {};

TEST_F(Dtypes, EveryDtypeWithEveryOp) {
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK) << evmpi_last_error();
  int rank = evmpi_pg_rank(pg), size = evmpi_pg_size(pg);
  std::string table = "dtype       sum  prod min  max  avg  band bor  bxor\n";
  int accepted = 0, refused = 0;
  for (size_t d = 0; d < sizeof kDtypes / sizeof kDtypes[0]; d++) {
    evmpi_dtype_t dt = kDtypes[d];
    Kind k = kind(dt);
    char row[32];
    std::snprintf(row, sizeof row, "%-11s", kDtypeNames[d]);
    table += row;
    for (size_t o = 0; o < sizeof kOps / sizeof kOps[0]; o++) {
      evmpi_reduce_op_t op = kOps[o];
      alignas(16) unsigned char buf[kN * 16];
      for (int i = 0; i < kN; i++)
        store(dt, buf, i, value(rank, i, k));
      evmpi_tensor_t t = evmpi_tensor_flat(buf, dt, kN);
      evmpi_work_t *w = nullptr;
      int rc = evmpi_allreduce(pg, &t, op, &w);
      if (!defined(dt, op)) {
        EXPECT_EQ(rc, EVMPI_ERR_UNSUPPORTED) << kDtypeNames[d] << " " << kOpNames[o];
        EXPECT_EQ(w, nullptr);
        EXPECT_NE(std::strstr(evmpi_last_error(), kOpNames[o]), nullptr) << evmpi_last_error();
        table += " -   ";
        refused++;
        continue;
      }
      ASSERT_EQ(rc, EVMPI_OK) << kDtypeNames[d] << " " << kOpNames[o] << ": " << evmpi_last_error();
      ASSERT_EQ(evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK) << evmpi_work_error(w);
      evmpi_work_release(w);
      double tol = k == HALF ? (dt == EVMPI_BFLOAT16 ? 2e-2 : 2e-3) : k == FLOAT ? 1e-6 : 0;
      bool ok = true;
      for (int i = 0; i < kN; i++) {
        cplx want = expected(op, k, size, i), got = load(dt, buf, i);
        double err = std::abs(got - want), scale = std::max(1.0, std::abs(want));
        EXPECT_LE(err, tol * scale) << kDtypeNames[d] << " " << kOpNames[o] << " element " << i
                                    << ": got " << got << " want " << want;
        ok = ok && err <= tol * scale;
      }
      table += ok ? " ok  " : " BAD ";
      accepted++;
    }
    table += "\n";
  }
  EXPECT_EQ(accepted + refused, 15 * 8);
  if (rank == 0 && size == 2)
    std::printf("%s(ok = checked against the local reduction, - = EVMPI_ERR_UNSUPPORTED)\n",
                table.c_str());
  evmpi_pg_destroy(pg);
  event_base_free(base);
}

// float16 and bfloat16 sums over many elements exercise the vectorised
// kernels, including element counts that are not a multiple of a vector.
TEST_F(Dtypes, HalfPrecisionLongVectors) {
  struct event_base *base = event_base_new();
  evmpi_pg_t *pg = nullptr;
  ASSERT_EQ(evmpi_pg_create(base, nullptr, 0, &pg), EVMPI_OK);
  int size = evmpi_pg_size(pg);
  for (evmpi_dtype_t dt : {EVMPI_FLOAT16, EVMPI_BFLOAT16}) {
    const int n = 1003;
    std::vector<uint16_t> v(n);
    for (int i = 0; i < n; i++)
      v[i] = dt == EVMPI_FLOAT16 ? to_f16((float)(i % 7) * 0.5f) : to_bf16((float)(i % 7) * 0.5f);
    evmpi_tensor_t t = evmpi_tensor_flat(v.data(), dt, n);
    evmpi_work_t *w;
    ASSERT_EQ(evmpi_allreduce(pg, &t, EVMPI_SUM, &w), EVMPI_OK);
    ASSERT_EQ(evmpi_work_wait(w, EVMPI_TEST_TIMEOUT_MS), EVMPI_OK);
    evmpi_work_release(w);
    for (int i = 0; i < n; i++) {
      float got = dt == EVMPI_FLOAT16 ? from_f16(v[i]) : from_bf16(v[i]);
      ASSERT_EQ(got, (float)(i % 7) * 0.5f * size) << i;
    }
  }
  evmpi_pg_destroy(pg);
  event_base_free(base);
}

} // namespace

int main(int argc, char **argv) { return evmpi_test_main(argc, argv, EVMPI_TEST_MPI_INIT_MULTIPLE); }
