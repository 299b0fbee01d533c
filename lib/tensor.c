/* tensor.c: tensor descriptors, their element counts and the checks every operation
 * makes before anything is queued. */
#include "tensor-internal.h"
#include "bigcount-internal.h"
#include "cuda-internal.h"
#include "dtype_mpi-internal.h"
#include "status-internal.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

evmpi_tensor_t evmpi_tensor_flat(void *data, evmpi_dtype_t dtype, int64_t count) {
  evmpi_tensor_t t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.dtype = dtype;
  t.ndim = 1;
  t.shape[0] = count;
  t.device.type = EVMPI_DEVICE_CPU;
  return t;
}

int64_t evmpi_tensor_numel(const evmpi_tensor_t *t) {
  if (!t || t->ndim < 0 || t->ndim > EVMPI_MAX_DIMS)
    return -1;
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) {
    if (t->shape[i] < 0)
      return -1;
    if (t->shape[i] != 0 && n > INT64_MAX / t->shape[i])
      return -1;
    n *= t->shape[i];
  }
  return n;
}

/* Strides all zero mean contiguous. Otherwise they must be the row-major
 * strides of the shape; a dimension of extent 1 may carry any stride, as
 * it is never stepped over. */
static bool is_contiguous(const evmpi_tensor_t *t) {
  bool all_zero = true;
  for (int i = 0; i < t->ndim; i++)
    all_zero = all_zero && t->strides[i] == 0;
  if (all_zero)
    return true;
  int64_t expect = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    if (t->shape[i] != 1 && t->strides[i] != expect)
      return false;
    expect *= t->shape[i];
  }
  return true;
}

int evmpi__check_tensor(const char *op, const char *arg, const evmpi_tensor_t *t, int64_t *numel) {
  if (!t)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s is NULL", op, arg);
  if (evmpi_dtype_size(t->dtype) == 0)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s: dtype %d is not a valid evmpi_dtype_t", op, arg,
                       (int)t->dtype);
  if (t->ndim < 0 || t->ndim > EVMPI_MAX_DIMS)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s: ndim %d is outside 0..%d", op, arg, t->ndim,
                       EVMPI_MAX_DIMS);
  for (int i = 0; i < t->ndim; i++)
    if (t->shape[i] < 0)
      return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s: shape[%d] is %" PRId64 ", must be >= 0", op,
                         arg, i, t->shape[i]);
  int64_t n = evmpi_tensor_numel(t);
  if (n < 0 || (uint64_t)n > (uint64_t)INT64_MAX / evmpi_dtype_size(t->dtype))
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s: the shape's size overflows", op, arg);
  /* Beyond 2^61 - 1 elements a buffer is no derived datatype of int
   * counts (bigcount.c): refused here, naming the argument, rather than
   * by MPI on the worker. No memory holds such a tensor anyway. */
  if (n / EVMPI_CHUNK_ELEMS > INT_MAX)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s: %" PRId64 " elements are more than one MPI "
                       "datatype describes (2^61 - 1 at most)", op, arg, n);
  /* An empty tensor's other extents still size its rows (alltoall_base
   * splits dim 0 into rows of shape[1..]) and its strides: they must
   * multiply to a byte count too, or {0, 2^32, 2^32} overflows there. */
  int64_t extents = (int64_t)evmpi_dtype_size(t->dtype);
  for (int i = 0; i < t->ndim; i++)
    if (t->shape[i] != 0 && __builtin_mul_overflow(extents, t->shape[i], &extents))
      return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s: the shape's size overflows (its non-zero "
                         "extents multiply to more than INT64_MAX bytes)", op, arg);
  if (!is_contiguous(t))
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s has to be contiguous (its strides are not "
                       "row-major for its shape)", op, arg);
  if (n > 0 && !t->data)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s: data is NULL for %" PRId64 " elements", op, arg,
                       n);
  switch (t->device.type) {
  case EVMPI_DEVICE_CPU:
    break;
  case EVMPI_DEVICE_CUDA: {
#ifdef EVMPI_HAVE_CUDA
    int rc = evmpi__cuda_check_tensor(op, arg, t, n);
    if (rc != EVMPI_OK)
      return rc;
    break;
#else
    return evmpi__fail(EVMPI_ERR_UNSUPPORTED, "%s: %s is on cuda:%d but this evmpi was built "
                       "without CUDA (install the CUDA toolkit and configure --with-cuda=DIR)",
                       op, arg, t->device.index);
#endif
  }
  default:
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s: device type %d is not a valid "
                       "evmpi_device_type_t", op, arg, (int)t->device.type);
  }
  if (numel)
    *numel = n;
  return EVMPI_OK;
}

int evmpi__check_group_bytes(const char *op, const char *arg, int64_t numel,
                             evmpi_dtype_t dtype, int size) {
  int64_t bytes;
  if (!__builtin_mul_overflow(numel, (int64_t)evmpi_dtype_size(dtype), &bytes) &&
      !__builtin_mul_overflow(bytes, (int64_t)size, &bytes))
    return EVMPI_OK;
  return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s: %" PRId64 " elements of %zu bytes for each of "
                     "the group's %d ranks overflow (more than INT64_MAX bytes in all)", op, arg,
                     numel, evmpi_dtype_size(dtype), size);
}

const char *evmpi__device_name(evmpi_device_t dev, char *buf, size_t len) {
  if (dev.type == EVMPI_DEVICE_CPU)
    snprintf(buf, len, "cpu");
  else
    snprintf(buf, len, "cuda:%d", dev.index);
  return buf;
}

static bool same_device(evmpi_device_t a, evmpi_device_t b) {
  return a.type == b.type && (a.type == EVMPI_DEVICE_CPU || a.index == b.index);
}

int evmpi__check_same_device(const char *op, const char *arg, const evmpi_tensor_t *t,
                             const char *refname, const evmpi_tensor_t *ref) {
  if (same_device(t->device, ref->device))
    return EVMPI_OK;
  char a[32], b[32];
  return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s is on %s but %s is on %s (the tensors of one "
                     "operation must be on one device)", op, arg,
                     evmpi__device_name(t->device, a, sizeof a), refname,
                     evmpi__device_name(ref->device, b, sizeof b));
}

int evmpi__check_list(const char *op, const char *arg, const evmpi_tensor_t *list, int n,
                      const char *ref, const evmpi_tensor_t *like, int64_t numel) {
  evmpi_dtype_t dtype = like->dtype;
  if (!list)
    return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s is NULL", op, arg);
  for (int i = 0; i < n; i++) {
    char name[64];
    snprintf(name, sizeof name, "%s[%d]", arg, i);
    int64_t ni = 0;
    int rc = evmpi__check_tensor(op, name, &list[i], &ni);
    if (rc != EVMPI_OK)
      return rc;
    if (list[i].dtype != dtype)
      return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s is %s but %s is %s (tensors must have the "
                         "same dtype)", op, name, evmpi__dtype_name(list[i].dtype), ref,
                         evmpi__dtype_name(dtype));
    rc = evmpi__check_same_device(op, name, &list[i], ref, like);
    if (rc != EVMPI_OK)
      return rc;
    if (numel >= 0 && ni != numel)
      return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s has %" PRId64 " elements but %s has %" PRId64
                         " (tensors must have the same size)", op, name, ni, ref, numel);
  }
  return EVMPI_OK;
}

int evmpi__check_pair(const char *op, const evmpi_tensor_t *output, const evmpi_tensor_t *input,
                      int64_t *out_numel, int64_t *in_numel) {
  int rc = evmpi__check_tensor(op, "input", input, in_numel);
  if (rc == EVMPI_OK)
    rc = evmpi__check_tensor(op, "output", output, out_numel);
  if (rc == EVMPI_OK && output->dtype != input->dtype)
    rc = evmpi__fail(EVMPI_ERR_INVALID, "%s: output is %s but input is %s", op,
                     evmpi__dtype_name(output->dtype), evmpi__dtype_name(input->dtype));
  if (rc == EVMPI_OK)
    rc = evmpi__check_same_device(op, "output", output, "input", input);
  return rc;
}

int evmpi__check_list_bytes(const char *op, const char *arg, const evmpi_tensor_t *list, size_t n,
                            int64_t *numel, int64_t *bytes) {
  *numel = *bytes = 0;
  for (size_t i = 0; i < n; i++) {
    int64_t ni = evmpi_tensor_numel(&list[i]), bi;
    if (__builtin_mul_overflow(ni, (int64_t)evmpi_dtype_size(list[i].dtype), &bi) ||
        __builtin_add_overflow(*bytes, bi, bytes))
      return evmpi__fail(EVMPI_ERR_INVALID, "%s: %s: their sizes add up to more than INT64_MAX "
                         "bytes (at %s[%zu])", op, arg, arg, i);
    *numel += ni; /* no larger than the bytes */
  }
  return EVMPI_OK;
}
