/* pp_thread.h -- OS threads and CPU discovery for the engine core. */
#ifndef PP_THREAD_H
#define PP_THREAD_H

#include <pthread.h>

typedef void (*pp_thread_proc)(void *arg);

typedef struct pp_thread {
    pthread_t handle;
    pp_thread_proc proc;
    void *arg;
} pp_thread;

/* Starts proc(arg) on a new thread with all signals blocked, so that
 * SIGINT and friends are always delivered to the main thread.  Returns 0 or a
 * positive errno value. */
int pp_thread_start(pp_thread *t, pp_thread_proc proc, void *arg);

/* Waits for the thread to return.  Returns 0 or a positive errno value. */
int pp_thread_join(pp_thread *t);

/* The number of CPUs this process may run on (sched_getaffinity), at least
 * 1. */
int pp_cpu_count(void);

#endif /* PP_THREAD_H */
