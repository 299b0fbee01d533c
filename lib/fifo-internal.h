/*
 * fifo-internal.h: singly linked first-in first-out lists, linked through
 * a member named next: the worker's queue, the poller's lists of finished
 * works, a future's callbacks (header only). Private to lib/.
 */
#ifndef EVMPI_FIFO_INTERNAL_H
#define EVMPI_FIFO_INTERNAL_H

/* Appends x to the list head..tail (both NULL when it is empty). */
#define EVMPI__FIFO_PUSH(head, tail, x) \
  do {                                  \
    (x)->next = NULL;                   \
    if (tail)                           \
      (tail)->next = (x);               \
    else                                \
      (head) = (x);                     \
    (tail) = (x);                       \
  } while (0)

#endif /* EVMPI_FIFO_INTERNAL_H */
