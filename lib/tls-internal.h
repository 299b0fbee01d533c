/*
 * tls-internal.h: thread-local variables on hot paths (header only).
 * Private to lib/; names with a double underscore are hidden from the
 * shared library.
 */
#ifndef EVMPI_TLS_INTERNAL_H
#define EVMPI_TLS_INTERNAL_H

/* A thread-local variable that a send's, a receive's or a poll's path
 * reads. In a shared library the default (global-dynamic) model makes
 * each access a call to __tls_get_addr, a visible part of a small
 * message's cost; initial-exec reads it at a fixed offset from the thread
 * pointer. The variables are small: a library loaded late with dlopen
 * takes them from the surplus glibc keeps for that. */
#if defined(__GNUC__)
#define EVMPI__HOT_TLS _Thread_local __attribute__((tls_model("initial-exec")))
#else
#define EVMPI__HOT_TLS _Thread_local
#endif

#endif /* EVMPI_TLS_INTERNAL_H */
