/* dtype_mpi.c: the dtypes' sizes and names, the tables from them and the
 * reduce ops to MPI's, and
 * the refusal of pairs that make no sense. */
#include "dtype_mpi-internal.h"
#include "half_ops-internal.h"
#include "status-internal.h"

#include <complex.h>

MPI_Datatype evmpi__mpi_datatype(evmpi_dtype_t dtype) {
  switch (dtype) {
  case EVMPI_UINT8: return MPI_UINT8_T;
  case EVMPI_INT8: return MPI_INT8_T;
  case EVMPI_INT16: return MPI_INT16_T;
  case EVMPI_INT32: return MPI_INT32_T;
  case EVMPI_INT64: return MPI_INT64_T;
  case EVMPI_FLOAT32: return MPI_FLOAT;
  case EVMPI_FLOAT64: return MPI_DOUBLE;
  case EVMPI_UINT16: return MPI_UINT16_T;
  case EVMPI_UINT32: return MPI_UINT32_T;
  case EVMPI_UINT64: return MPI_UINT64_T;
  /* Moved as opaque 16-bit words; reductions need their own MPI_Op. */
  case EVMPI_FLOAT16: return MPI_UINT16_T;
  case EVMPI_BFLOAT16: return MPI_UINT16_T;
  case EVMPI_BOOL: return MPI_C_BOOL;
  case EVMPI_COMPLEX64: return MPI_C_FLOAT_COMPLEX;
  case EVMPI_COMPLEX128: return MPI_C_DOUBLE_COMPLEX;
  }
  return MPI_DATATYPE_NULL;
}

size_t evmpi_dtype_size(evmpi_dtype_t dtype) {
  switch (dtype) {
  case EVMPI_UINT8: case EVMPI_INT8: case EVMPI_BOOL: return 1;
  case EVMPI_INT16: case EVMPI_UINT16: case EVMPI_FLOAT16: case EVMPI_BFLOAT16: return 2;
  case EVMPI_INT32: case EVMPI_UINT32: case EVMPI_FLOAT32: return 4;
  case EVMPI_INT64: case EVMPI_UINT64: case EVMPI_FLOAT64: case EVMPI_COMPLEX64: return 8;
  case EVMPI_COMPLEX128: return 16;
  }
  return 0;
}

const char *evmpi__dtype_name(evmpi_dtype_t dtype) {
  static const char *const names[] = {
      "uint8",  "int8",   "int16",   "int32",    "int64", "float32",   "float64",    "uint16",
      "uint32", "uint64", "float16", "bfloat16", "bool",  "complex64", "complex128",
  };
  if ((unsigned)dtype < sizeof names / sizeof names[0])
    return names[dtype];
  return "invalid";
}

const char *evmpi__reduce_op_name(evmpi_reduce_op_t op) {
  static const char *const names[] = {"sum", "product", "min", "max", "avg", "band", "bor", "bxor"};
  if ((unsigned)op < sizeof names / sizeof names[0])
    return names[op];
  return "invalid";
}

typedef enum { CLASS_INT, CLASS_FLOAT, CLASS_HALF, CLASS_BOOL, CLASS_COMPLEX } dtype_class_t;

static dtype_class_t dtype_class(evmpi_dtype_t d) {
  switch (d) {
  case EVMPI_FLOAT32: case EVMPI_FLOAT64: return CLASS_FLOAT;
  case EVMPI_FLOAT16: case EVMPI_BFLOAT16: return CLASS_HALF;
  case EVMPI_BOOL: return CLASS_BOOL;
  case EVMPI_COMPLEX64: case EVMPI_COMPLEX128: return CLASS_COMPLEX;
  default: return CLASS_INT;
  }
}

int evmpi__mpi_reduce_op(const char *opname, evmpi_reduce_op_t op, evmpi_dtype_t dtype,
                         MPI_Op *mpi_op, bool *post_divide) {
  if ((unsigned)op > EVMPI_BXOR)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: op %d is not a valid evmpi_reduce_op_t", opname,
                       (int)op);
  dtype_class_t c = dtype_class(dtype);
  MPI_Op m = MPI_OP_NULL;
  *post_divide = false;
  if (c == CLASS_HALF) {
    if (op <= EVMPI_AVG) {
      int rc = evmpi__half_op(dtype, op, &m);
      if (rc == EVMPI_ERR_MPI)
        return evmpi__fail(rc, "%s: MPI_Op_create failed for %s reductions", opname,
                           evmpi__dtype_name(dtype));
      *post_divide = op == EVMPI_AVG;
    }
  } else if (c == CLASS_BOOL) {
    /* Logical algebra, as torch reduces bools: sum/max/bor are "or". */
    switch (op) {
    case EVMPI_SUM: case EVMPI_MAX: case EVMPI_BOR: m = MPI_LOR; break;
    case EVMPI_PRODUCT: case EVMPI_MIN: case EVMPI_BAND: m = MPI_LAND; break;
    case EVMPI_BXOR: m = MPI_LXOR; break;
    case EVMPI_AVG: break;
    }
  } else {
    switch (op) {
    case EVMPI_SUM: m = MPI_SUM; break;
    case EVMPI_PRODUCT: m = MPI_PROD; break;
    case EVMPI_MIN: if (c != CLASS_COMPLEX) m = MPI_MIN; break;
    case EVMPI_MAX: if (c != CLASS_COMPLEX) m = MPI_MAX; break;
    case EVMPI_AVG:
      if (c != CLASS_INT) {
        m = MPI_SUM;
        *post_divide = true;
      }
      break;
    case EVMPI_BAND: if (c == CLASS_INT) m = MPI_BAND; break;
    case EVMPI_BOR: if (c == CLASS_INT) m = MPI_BOR; break;
    case EVMPI_BXOR: if (c == CLASS_INT) m = MPI_BXOR; break;
    }
  }
  if (m == MPI_OP_NULL)
    return evmpi__fail(EVMPI_ERR_UNSUPPORTED, "%s: op %s is not defined on dtype %s", opname,
                       evmpi__reduce_op_name(op), evmpi__dtype_name(dtype));
  *mpi_op = m;
  return EVMPI_OK;
}

void evmpi__divide(void *data, evmpi_dtype_t dtype, int64_t count, int divisor) {
  switch (dtype) {
  case EVMPI_FLOAT32: {
    float *p = data;
    for (int64_t i = 0; i < count; i++) p[i] /= (float)divisor;
    break;
  }
  case EVMPI_FLOAT64: {
    double *p = data;
    for (int64_t i = 0; i < count; i++) p[i] /= (double)divisor;
    break;
  }
  case EVMPI_COMPLEX64: {
    float complex *p = data;
    for (int64_t i = 0; i < count; i++) p[i] /= (float)divisor;
    break;
  }
  case EVMPI_COMPLEX128: {
    double complex *p = data;
    for (int64_t i = 0; i < count; i++) p[i] /= (double)divisor;
    break;
  }
  case EVMPI_FLOAT16:
  case EVMPI_BFLOAT16:
    evmpi__half_divide(data, dtype, count, divisor);
    break;
  default:
    break; /* evmpi__mpi_reduce_op refuses avg on other types */
  }
}
