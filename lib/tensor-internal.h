/*
 * tensor-internal.h: the checks every operation makes on its tensors.
 * Private to lib/; names with a double underscore are hidden from the shared
 * library.
 */
#ifndef EVMPI_TENSOR_INTERNAL_H
#define EVMPI_TENSOR_INTERNAL_H

#include "config.h" /* EVMPI_HAVE_CUDA */
#include "evmpi.h"

/* Checks one tensor given to operation op as argument arg; on success
 * stores its element count. Sets the last error and returns its status. */
int evmpi__check_tensor(const char *op, const char *arg, const evmpi_tensor_t *t, int64_t *numel);
/* Checks list[0..n), named arg ("outputs"): each well formed, with dtype
 * and (when numel >= 0) numel elements, as the reference named ref has. */
int evmpi__check_list(const char *op, const char *arg, const evmpi_tensor_t *list, int n,
                      const char *ref, const evmpi_tensor_t *like, int64_t numel);
/* Checks that t (named arg) is on the device of ref (named refname): an
 * operation's tensors are all on one device. */
int evmpi__check_same_device(const char *op, const char *arg, const evmpi_tensor_t *t,
                             const char *refname, const evmpi_tensor_t *ref);
/* Checks that numel elements of dtype for each of size ranks (what a
 * gather, scatter or allgather moves and packs in all) fit INT64_MAX
 * bytes; EVMPI_ERR_INVALID naming arg otherwise. Every rank checks it
 * alike, so none enters a collective that another refused. */
int evmpi__check_group_bytes(const char *op, const char *arg, int64_t numel,
                             evmpi_dtype_t dtype, int size);
/* Checks an operation's output and input (allgather_base, alltoall_base):
 * each well formed, of one dtype, on one device; stores their counts. */
int evmpi__check_pair(const char *op, const evmpi_tensor_t *output, const evmpi_tensor_t *input,
                      int64_t *out_numel, int64_t *in_numel);
/* Checks that the bytes of list[0..n) (named arg) add up to at most
 * INT64_MAX, as a coalesced operation packs them into one buffer; stores
 * the sum of their element counts in *numel and of their bytes in *bytes. */
int evmpi__check_list_bytes(const char *op, const char *arg, const evmpi_tensor_t *list, size_t n,
                            int64_t *numel, int64_t *bytes);
/* "cpu" or "cuda:1", into buf. */
const char *evmpi__device_name(evmpi_device_t dev, char *buf, size_t len);

#endif /* EVMPI_TENSOR_INTERNAL_H */
