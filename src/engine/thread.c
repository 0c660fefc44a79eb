/* thread.c -- see pp_thread.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "pp_thread.h"

#include <sched.h>
#include <signal.h>
#include <unistd.h>

static void *
trampoline(void *arg)
{
    pp_thread *t = arg;

    t->proc(t->arg);
    return NULL;
}

int
pp_thread_start(pp_thread *t, pp_thread_proc proc, void *arg)
{
    sigset_t all, old;
    int rc;

    t->proc = proc;
    t->arg = arg;
    /* The new thread inherits the creator's mask: block everything around
     * pthread_create so no signal handler ever runs on a worker. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&t->handle, NULL, trampoline, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

int
pp_thread_join(pp_thread *t)
{
    return pthread_join(t->handle, NULL);
}

int
pp_cpu_count(void)
{
    cpu_set_t set;
    long n;

    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        n = CPU_COUNT(&set);
        if (n > 0)
            return (int)n;
    }
    n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
