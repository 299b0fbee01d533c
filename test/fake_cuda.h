/* fake_cuda.h: a simulated CUDA runtime for the tests of machines without
 * a GPU (test/test_cuda_sim). It defines the CUDA runtime functions that
 * evmpi and the tests call; linked into a test program (exported with
 * -Wl,--export-dynamic), it takes the place of libcudart for libevmpi too.
 *
 * What it simulates, to catch what a GPU would:
 *  - device memory that the host cannot touch: cudaMalloc returns
 *    addresses in a region mapped PROT_NONE, so any host access to a device
 *    pointer (by evmpi, or by MPI on the staged path) is a segfault. The
 *    data lives in a second mapping of the same memory, which the copies
 *    use. fake_cuda_host_access(true) opens the region, as a CUDA-aware
 *    MPI reads device memory, for tests of the direct path.
 *  - streams that really run asynchronously: each stream is a thread that
 *    runs its copies in order after a delay (FAKE_CUDA_DELAY_US, default
 *    100 us), so a missing cudaStreamSynchronize or event wait shows up as
 *    wrong data. Events and cudaStreamWaitEvent order them as CUDA does.
 *  - FAKE_CUDA_DEVICES devices (default 2; 0 = no device, as without a
 *    driver), a current device per thread (which the tests can count
 *    across threads), and pointer attributes.
 * It is not CUDA: no kernels, no contexts, no peer access. */
#ifndef EVMPI_FAKE_CUDA_H
#define EVMPI_FAKE_CUDA_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Lets the host read and write device memory (true) or not (false, the
 * default). */
void fake_cuda_host_access(bool on);
/* The next n copies (cudaMemcpy, cudaMemcpyAsync) fail with
 * cudaErrorLaunchFailure. */
void fake_cuda_fail_copies(int n);
/* The next synchronous copy (cudaMemcpy) sleeps ms milliseconds first: a
 * slow device, or a rank held up between its arrival gate and its MPI
 * call (evmpi packs a fused set's device tensors with cudaMemcpy). */
void fake_cuda_slow_next_copy(int ms);
/* Copies made so far (by this process): device to host, host to device. */
void fake_cuda_copy_counts(long *d2h, long *h2d);
/* Live device allocations and pinned host allocations. */
int fake_cuda_live_allocations(int *pinned);
/* How many live threads have device as their current device, among those
 * that ever called cudaSetDevice (any other thread is on device 0): a
 * library thread left on a device it switched to shows up here. */
int fake_cuda_threads_on_device(int device);
/* Synchronous host-to-device copies (cudaMemcpy) the calling thread has
 * made: a staged receive's copy must not run on the loop thread. */
long fake_cuda_sync_h2d_here(void);

#ifdef __cplusplus
}
#endif

#endif
