/* test_sync.c -- pp_word (spin-then-futex completion word) and pp_now_ns. */
#include "pp_sync.h"
#include "pp_thread.h"
#include "pp_test.h"

#include <sched.h>
#include <stdlib.h>
#include <time.h>

#define MS 1000000L
/* Long enough never to expire on a loaded machine; a wait that hits it
 * means a wake-up was lost. */
#define NO_HANG (10000 * MS)

static void
sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};

    nanosleep(&ts, NULL);
}

/* Waits until n threads are inside FUTEX_WAIT (or about to be) on w. */
static void
wait_for_sleepers(pp_word *w, unsigned n)
{
    while (atomic_load(&w->sleepers) < n)
        sleep_us(100);
}

static void
test_now_monotonic(void)
{
    uint64_t a = pp_now_ns(), b;

    sleep_us(2000);
    b = pp_now_ns();
    ASSERT_GE(b - a, 2 * (uint64_t)MS);
}

static void
test_init_get_cas(void)
{
    pp_word w;

    pp_word_init(&w, 5);
    ASSERT_EQ(pp_word_get(&w), 5);
    ASSERT_EQ(atomic_load(&w.sleepers), 0);

    ASSERT_EQ(pp_word_cas(&w, 5, 6), 1);
    ASSERT_EQ(pp_word_get(&w), 6);
    /* A stale expected value fails and leaves the word alone. */
    ASSERT_EQ(pp_word_cas(&w, 5, 7), 0);
    ASSERT_EQ(pp_word_get(&w), 6);
    ASSERT_EQ(pp_word_cas(&w, 6, 6), 1);
    ASSERT_EQ(pp_word_get(&w), 6);
    /* The full 32 bits take part. */
    ASSERT_EQ(pp_word_cas(&w, 6, 0xffffffffu), 1);
    ASSERT_EQ(pp_word_get(&w), 0xffffffffu);
    ASSERT_EQ(pp_word_cas(&w, 0x7fffffffu, 1), 0);
    ASSERT_EQ(pp_word_cas(&w, 0xffffffffu, 0), 1);
    ASSERT_EQ(pp_word_get(&w), 0);

    pp_word_set(&w, 42);
    ASSERT_EQ(pp_word_get(&w), 42);
}

static void
test_wait_returns_at_once_when_changed(void)
{
    pp_word w;

    pp_word_init(&w, 3);
    /* Not equal to expected: no spin, no sleep, whatever the limits. */
    ASSERT_EQ(pp_word_wait(&w, 2, 0, -1), 3);
    ASSERT_EQ(pp_word_wait(&w, 2, 1000 * MS, -1), 3);
    ASSERT_EQ(pp_word_wait(&w, 2, 0, 0), 3);
    ASSERT_EQ(atomic_load(&w.sleepers), 0);
}

static void
test_wait_timeout(void)
{
    pp_word w;
    uint64_t t0, dt;

    pp_word_init(&w, 9);

    /* A zero timeout returns the unchanged value without sleeping long. */
    ASSERT_EQ(pp_word_wait(&w, 9, 0, 0), 9);

    t0 = pp_now_ns();
    ASSERT_EQ(pp_word_wait(&w, 9, 0, 50 * MS), 9);
    dt = pp_now_ns() - t0;
    ASSERT_GE(dt, 50 * (uint64_t)MS);

    /* Spinning counts towards the timeout too. */
    t0 = pp_now_ns();
    ASSERT_EQ(pp_word_wait(&w, 9, 5 * MS, 30 * MS), 9);
    dt = pp_now_ns() - t0;
    ASSERT_GE(dt, 30 * (uint64_t)MS);
    ASSERT_EQ(atomic_load(&w.sleepers), 0);
}

typedef struct waiter {
    pp_word *w;
    uint32_t expected;
    long spin_ns;
    long timeout_ns;
    uint32_t got;
    uint64_t elapsed;
} waiter;

static void
waiter_run(void *arg)
{
    waiter *x = arg;
    uint64_t t0 = pp_now_ns();

    x->got = pp_word_wait(x->w, x->expected, x->spin_ns, x->timeout_ns);
    x->elapsed = pp_now_ns() - t0;
}

static void
test_set_wakes_sleeper(void)
{
    pp_word w;
    waiter x;
    pp_thread t;

    pp_word_init(&w, 0);
    x = (waiter){&w, 0, 0, NO_HANG, 0xdead, 0};
    ASSERT_EQ(pp_thread_start(&t, waiter_run, &x), 0);
    /* The waiter does not spin (spin 0): it is in futex before we set. */
    wait_for_sleepers(&w, 1);
    pp_word_set(&w, 7);
    ASSERT_EQ(pp_thread_join(&t), 0);
    ASSERT_EQ(x.got, 7);
    ASSERT_LT(x.elapsed, (uint64_t)NO_HANG);
    ASSERT_EQ(atomic_load(&w.sleepers), 0);

    /* The same with no timeout at all (the watchdog catches a hang). */
    pp_word_init(&w, 0);
    x = (waiter){&w, 0, 0, -1, 0xdead, 0};
    ASSERT_EQ(pp_thread_start(&t, waiter_run, &x), 0);
    wait_for_sleepers(&w, 1);
    pp_word_set(&w, 1);
    ASSERT_EQ(pp_thread_join(&t), 0);
    ASSERT_EQ(x.got, 1);
}

static void
test_set_wakes_every_sleeper(void)
{
    enum { N = 4 };
    pp_word w;
    waiter x[N];
    pp_thread t[N];
    int i;

    pp_word_init(&w, 100);
    for (i = 0; i < N; i++) {
        x[i] = (waiter){&w, 100, 0, i % 2 ? NO_HANG : -1, 0xdead, 0};
        ASSERT_EQ(pp_thread_start(&t[i], waiter_run, &x[i]), 0);
    }
    wait_for_sleepers(&w, N);
    pp_word_set(&w, 101);
    for (i = 0; i < N; i++) {
        ASSERT_EQ(pp_thread_join(&t[i]), 0);
        ASSERT_EQ(x[i].got, 101);
    }
}

static void
test_set_same_value_keeps_waiting(void)
{
    pp_word w;
    waiter x;
    pp_thread t;

    /* A wake-up that leaves the value as it was is not a change: the waiter
     * goes back to sleep and runs into its timeout. */
    pp_word_init(&w, 4);
    x = (waiter){&w, 4, 0, 100 * MS, 0xdead, 0};
    ASSERT_EQ(pp_thread_start(&t, waiter_run, &x), 0);
    wait_for_sleepers(&w, 1);
    pp_word_set(&w, 4);
    ASSERT_EQ(pp_thread_join(&t), 0);
    ASSERT_EQ(x.got, 4);
    ASSERT_GE(x.elapsed, 100 * (uint64_t)MS);
}

static void
test_spinning_waiter_sees_set(void)
{
    pp_word w;
    waiter x;
    pp_thread t;

    /* A generous spin: the change is most likely seen while spinning; either
     * way the waiter must return the new value. */
    pp_word_init(&w, 0);
    x = (waiter){&w, 0, 200 * MS, NO_HANG, 0xdead, 0};
    ASSERT_EQ(pp_thread_start(&t, waiter_run, &x), 0);
    sleep_us(1000);
    pp_word_set(&w, 3);
    ASSERT_EQ(pp_thread_join(&t), 0);
    ASSERT_EQ(x.got, 3);

    /* A cas is seen by a spinning waiter as well. */
    pp_word_init(&w, 0);
    x = (waiter){&w, 0, 200 * MS, NO_HANG, 0xdead, 0};
    ASSERT_EQ(pp_thread_start(&t, waiter_run, &x), 0);
    sleep_us(1000);
    ASSERT_EQ(pp_word_cas(&w, 0, 8), 1);
    ASSERT_EQ(pp_thread_join(&t), 0);
    ASSERT_EQ(x.got, 8);
}

/* ---- stress: ping-pong between two threads over two words ---- */

#define ROUNDS 100000u

typedef struct pingpong {
    pp_word ping;            /* main -> partner: round number */
    pp_word pong;            /* partner -> main: round number echoed */
} pingpong;

/* Spin values cycled through so that both the spin path and the futex path
 * (spin 0) take part, and every interleaving of the two. */
static const long spin_for_round[4] = {0, 0, 2000, 50000};

/* A waiter with spin 0 still spins 64 turns before it sleeps, which an idle
 * partner on another core easily beats; so now and then the setter dawdles
 * first, to make sure the waiter is inside futex(2) when the set comes. */
static void
dawdle(uint32_t round, uint32_t phase)
{
    if ((round & 127) == phase)
        sleep_us(20);
}

static void
pong_run(void *arg)
{
    pingpong *pp = arg;
    uint32_t i, v;

    for (i = 1; i <= ROUNDS; i++) {
        v = pp_word_wait(&pp->ping, i - 1, spin_for_round[i & 3], NO_HANG);
        if (v != i)
            PP_TEST_FAIL("partner: round %u saw ping %u", i, v);
        dawdle(i, 7);
        pp_word_set(&pp->pong, i);
    }
}

static void
test_ping_pong(void)
{
    pingpong pp;
    pp_thread t;
    uint32_t i, v;

    pp_word_init(&pp.ping, 0);
    pp_word_init(&pp.pong, 0);
    ASSERT_EQ(pp_thread_start(&t, pong_run, &pp), 0);
    for (i = 1; i <= ROUNDS; i++) {
        dawdle(i, 23);
        pp_word_set(&pp.ping, i);
        v = pp_word_wait(&pp.pong, i - 1, spin_for_round[(i >> 2) & 3],
                         NO_HANG);
        if (v != i)
            PP_TEST_FAIL("main: round %u saw pong %u", i, v);
    }
    ASSERT_EQ(pp_thread_join(&t), 0);
    ASSERT_EQ(pp_word_get(&pp.ping), ROUNDS);
    ASSERT_EQ(pp_word_get(&pp.pong), ROUNDS);
    ASSERT_EQ(atomic_load(&pp.ping.sleepers), 0);
    ASSERT_EQ(atomic_load(&pp.pong.sleepers), 0);
}

/* The waiter frees the word as soon as it sees the change (a call's done
 * flag in the memory of the call): the setter must be done with the word
 * by then.  Under ASan a setter that still reads it fails here. */
#define HANDOFFS 200000

typedef struct {
    _Atomic(pp_word *) slot;
    atomic_uint stop;
} handoff;

static void
setter_run(void *arg)
{
    handoff *h = arg;
    uint32_t n = 0;

    while (!atomic_load(&h->stop)) {
        pp_word *w = atomic_exchange(&h->slot, NULL);
        if (w == NULL) {
            pp_cpu_relax();
            continue;
        }
        pp_word_set(w, 1);
        if ((++n & 255) == 0)
            sched_yield();       /* now and then, be preempted mid-way */
    }
}

static void
test_waiter_may_free_the_word_at_once(void)
{
    handoff h;
    pp_thread t;
    int i;

    atomic_init(&h.slot, NULL);
    atomic_init(&h.stop, 0);
    ASSERT_EQ(pp_thread_start(&t, setter_run, &h), 0);
    for (i = 0; i < HANDOFFS; i++) {
        pp_word *w = malloc(sizeof(*w));
        ASSERT_NOT_NULL(w);
        pp_word_init(w, 0);
        atomic_store(&h.slot, w);
        ASSERT_EQ(pp_word_wait(w, 0, (i & 1) ? 100000 : 0, NO_HANG), 1);
        free(w);
    }
    atomic_store(&h.stop, 1);
    ASSERT_EQ(pp_thread_join(&t), 0);
}

int
main(void)
{
    PP_TEST_BEGIN();
    RUN_TEST(test_now_monotonic);
    RUN_TEST(test_init_get_cas);
    RUN_TEST(test_wait_returns_at_once_when_changed);
    RUN_TEST(test_wait_timeout);
    RUN_TEST(test_set_wakes_sleeper);
    RUN_TEST(test_set_wakes_every_sleeper);
    RUN_TEST(test_set_same_value_keeps_waiting);
    RUN_TEST(test_spinning_waiter_sees_set);
    RUN_TEST(test_ping_pong);
    RUN_TEST(test_waiter_may_free_the_word_at_once);
    return PP_TEST_DONE();
}
