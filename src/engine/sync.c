/* sync.c -- see pp_sync.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "pp_sync.h"

#include <limits.h>
#include <sched.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

uint64_t
pp_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long
futex(atomic_uint *uaddr, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, (uint32_t *)uaddr, op, val, ts, NULL, 0);
}

void
pp_word_set(pp_word *w, uint32_t value)
{
    /* Sequentially consistent store then load: pairs with the waiter's
     * increment of sleepers followed by its futex compare, so a waiter that
     * went to sleep on the old value is always seen here. */
    atomic_fetch_add(&w->setters, 1);
    atomic_store(&w->value, value);
    if (atomic_load(&w->sleepers) != 0)
        (void)futex(&w->value, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
    atomic_fetch_sub(&w->setters, 1);     /* the last touch */
}

void
pp_word_quiesce(pp_word *w)
{
    unsigned i = 0;

    /* A setter is a few instructions (or one futex call) from done: spin,
     * and yield in case it was preempted in between. */
    while (atomic_load(&w->setters) != 0) {
        if ((++i & 63) == 0)
            sched_yield();
        else
            pp_cpu_relax();
    }
}

uint32_t
pp_word_add(pp_word *w, int32_t delta)
{
    uint32_t now;

    atomic_fetch_add(&w->setters, 1);
    now = atomic_fetch_add(&w->value, (uint32_t)delta) + (uint32_t)delta;
    if (atomic_load(&w->sleepers) != 0)
        (void)futex(&w->value, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
    atomic_fetch_sub(&w->setters, 1);
    return now;
}

uint32_t
pp_word_wait(pp_word *w, uint32_t expected, long spin_ns, long timeout_ns)
{
    uint64_t start = pp_now_ns(), now, left;
    uint32_t seen;
    unsigned i = 0;

    if (spin_ns < 0)
        spin_ns = 0;
    if (timeout_ns >= 0 && spin_ns > timeout_ns)
        spin_ns = timeout_ns;
    /* Spin first: a task that finishes within a few microseconds then costs
     * no system call on either side.  The clock is read every 64 turns. */
    while ((seen = pp_word_get(w)) == expected) {
        pp_cpu_relax();
        if ((++i & 63) == 0 && pp_now_ns() - start >= (uint64_t)spin_ns)
            break;
    }
    while (seen == expected) {
        struct timespec ts, *tsp = NULL;

        if (timeout_ns >= 0) {
            now = pp_now_ns();
            if (now - start >= (uint64_t)timeout_ns)
                break;
            left = (uint64_t)timeout_ns - (now - start);
            ts.tv_sec = (time_t)(left / 1000000000u);
            ts.tv_nsec = (long)(left % 1000000000u);
            tsp = &ts;
        }
        atomic_fetch_add(&w->sleepers, 1);
        /* EINTR, EAGAIN (the word already changed) and ETIMEDOUT all mean:
         * look again. */
        (void)futex(&w->value, FUTEX_WAIT_PRIVATE, expected, tsp);
        atomic_fetch_sub(&w->sleepers, 1);
        seen = pp_word_get(w);
    }
    if (seen != expected)
        pp_word_quiesce(w);
    return seen;
}
