/* test_loop.c -- pp_loop: wake-ups, timers, fd dispatch, pending calls,
 * stop. */
#include "pp_loop.h"
#include "pp_queue.h"
#include "pp_sync.h"
#include "pp_thread.h"
#include "pp_test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MS PP_NS_PER_MS
/* Long enough never to expire on a loaded machine; a wait that hits it
 * means a wake-up was lost. */
#define NO_HANG (10000 * (long)MS)

static void
sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};

    nanosleep(&ts, NULL);
}

static pp_loop *
new_loop(void)
{
    pp_loop *loop = NULL;

    ASSERT_EQ(pp_loop_create(&loop), 0);
    ASSERT_NOT_NULL(loop);
    return loop;
}

/* The leak check: every handle must be stopped by now. */
static void
free_loop(pp_loop *loop)
{
    ASSERT_EQ(pp_loop_destroy(loop), 0);
}

static pp_loop_stats
stats(pp_loop *loop)
{
    pp_loop_stats s;

    pp_loop_get_stats(loop, &s);
    return s;
}

/* Whether this kernel (and any seccomp filter) lets a process set up an
 * io_uring instance. */
static int
kernel_allows_io_uring(void)
{
#ifdef __NR_io_uring_setup
    unsigned char params[120];   /* struct io_uring_params */
    long fd;

    memset(params, 0, sizeof params);
    fd = syscall(__NR_io_uring_setup, 1, params);
    if (fd < 0)
        return 0;
    close((int)fd);
    return 1;
#else
    return 0;
#endif
}

static void
test_create_destroy(void)
{
    pp_loop *loop = new_loop();

    const char *want = getenv("PYPARALLEL_LOOP");

    if (want == NULL || *want == '\0')
        want = "epoll";
    /* The poller asked for runs; io_uring falls back to epoll only where
     * the kernel refuses io_uring_setup(2). */
    if (strcmp(want, "io_uring") == 0 && !kernel_allows_io_uring())
        want = "epoll";
    ASSERT_TRUE(strcmp(pp_loop_backend(loop), want) == 0);
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(stats(loop).iterations, 1);
    ASSERT_GE(pp_loop_now(loop), 1);
    free_loop(loop);
}

/* ---- wake-ups ---------------------------------------------------------- */

typedef struct waker {
    pp_async async;
    pp_loop *loop;
    atomic_uint calls;
    atomic_uint value;       /* published by the sender before each send */
    atomic_uint done;
    unsigned rounds;
    unsigned last_seen;
    pp_word ack;
} waker;

static void
count_call(pp_loop *loop, pp_async *a)
{
    waker *w = a->data;

    (void)loop;
    atomic_fetch_add(&w->calls, 1);
}

static void
send_many(void *arg)
{
    waker *w = arg;
    unsigned i;

    for (i = 0; i < w->rounds; i++)
        pp_async_send(&w->async);
}

/* With the loop not running, 10,000 sends from another thread write the
 * eventfd once and make one call. */
static void
test_wakeup_coalesces(void)
{
    pp_loop *loop = new_loop();
    waker w = {0};
    pp_thread t;

    w.rounds = 10000;
    ASSERT_EQ(pp_async_start(loop, &w.async, count_call, &w), 0);
    ASSERT_EQ(pp_thread_start(&t, send_many, &w), 0);
    ASSERT_EQ(pp_thread_join(&t), 0);
    ASSERT_EQ(stats(loop).wakeup_writes, 1);
    ASSERT_EQ(atomic_load(&w.calls), 0);   /* only ever on the loop */
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(atomic_load(&w.calls), 1);
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(atomic_load(&w.calls), 1);
    /* Once drained, the next send writes again. */
    pp_async_send(&w.async);
    pp_async_send(&w.async);
    ASSERT_EQ(stats(loop).wakeup_writes, 2);
    ASSERT_EQ(pp_loop_run_once(loop, -1), 0);
    ASSERT_EQ(atomic_load(&w.calls), 2);
    ASSERT_EQ(stats(loop).wakeups, 2);
    pp_async_stop(loop, &w.async);
    free_loop(loop);
}

/* Two handles share the loop's one eventfd write. */
static void
test_wakeup_two_handles_one_write(void)
{
    pp_loop *loop = new_loop();
    waker a = {0}, b = {0};

    pp_async_start(loop, &a.async, count_call, &a);
    pp_async_start(loop, &b.async, count_call, &b);
    pp_async_send(&b.async);
    pp_async_send(&a.async);
    ASSERT_EQ(stats(loop).wakeup_writes, 1);
    ASSERT_EQ(pp_loop_run_once(loop, -1), 0);
    ASSERT_EQ(atomic_load(&a.calls), 1);
    ASSERT_EQ(atomic_load(&b.calls), 1);
    pp_async_stop(loop, &a.async);
    pp_async_stop(loop, &b.async);
    free_loop(loop);
}

/* A callback stops another handle whose send is pending, and itself. */
static waker *victim;

static void
stop_victim(pp_loop *loop, pp_async *a)
{
    waker *w = a->data;

    atomic_fetch_add(&w->calls, 1);
    pp_async_stop(loop, &victim->async);
    pp_async_stop(loop, a);
}

static void
test_async_stop_during_drain(void)
{
    pp_loop *loop = new_loop();
    waker a = {0}, b = {0};

    pp_async_start(loop, &a.async, stop_victim, &a);
    pp_async_start(loop, &b.async, count_call, &b);
    victim = &b;
    pp_async_send(&b.async);
    pp_async_send(&a.async);
    ASSERT_EQ(pp_loop_run_once(loop, -1), 0);
    ASSERT_EQ(atomic_load(&a.calls), 1);
    ASSERT_EQ(atomic_load(&b.calls), 0);
    free_loop(loop);   /* both are stopped: destroy succeeds */
}

/* Ping-pong: every send must be answered, or the sender hangs. */
#define PING_ROUNDS 3000

static void
ping_answer(pp_loop *loop, pp_async *a)
{
    waker *w = a->data;
    unsigned v = atomic_load(&w->value);

    atomic_fetch_add(&w->calls, 1);
    pp_word_set(&w->ack, v);
    if (v == PING_ROUNDS)
        pp_loop_stop(loop);
}

static void
ping_sender(void *arg)
{
    waker *w = arg;
    unsigned i, v;

    for (i = 1; i <= PING_ROUNDS; i++) {
        atomic_store(&w->value, i);
        pp_async_send(&w->async);
        v = pp_word_wait(&w->ack, i - 1, (i & 1) ? 20000 : 0, NO_HANG);
        if (v != i)
            PP_TEST_FAIL("sender: round %u got ack %u", i, v);
    }
}

static void
test_wakeup_ping_pong(void)
{
    pp_loop *loop = new_loop();
    waker w = {0};
    pp_thread t;

    pp_word_init(&w.ack, 0);
    pp_async_start(loop, &w.async, ping_answer, &w);
    ASSERT_EQ(pp_thread_start(&t, ping_sender, &w), 0);
    ASSERT_EQ(pp_loop_run(loop), 0);
    ASSERT_EQ(pp_thread_join(&t), 0);
    ASSERT_EQ(atomic_load(&w.calls), PING_ROUNDS);
    ASSERT_EQ(pp_word_get(&w.ack), PING_ROUNDS);
    pp_async_stop(loop, &w.async);
    free_loop(loop);
}

/* A burst from another thread while the loop runs: sends coalesce, and the
 * last one is never lost. */
#define BURST 200000

static void
burst_seen(pp_loop *loop, pp_async *a)
{
    waker *w = a->data;

    atomic_fetch_add(&w->calls, 1);
    if (atomic_load(&w->done)) {
        w->last_seen = atomic_load(&w->value);
        pp_loop_stop(loop);
    }
}

static void
burst_sender(void *arg)
{
    waker *w = arg;
    unsigned i;

    for (i = 1; i <= BURST; i++) {
        atomic_store(&w->value, i);
        pp_async_send(&w->async);
    }
    atomic_store(&w->done, 1);
    pp_async_send(&w->async);
}

static void
test_wakeup_burst(void)
{
    pp_loop *loop = new_loop();
    waker w = {0};
    pp_thread t;
    pp_loop_stats s;

    pp_async_start(loop, &w.async, burst_seen, &w);
    ASSERT_EQ(pp_thread_start(&t, burst_sender, &w), 0);
    ASSERT_EQ(pp_loop_run(loop), 0);
    ASSERT_EQ(pp_thread_join(&t), 0);
    ASSERT_EQ(w.last_seen, BURST);
    s = stats(loop);
    ASSERT_LE(atomic_load(&w.calls), BURST + 1);
    /* Every eventfd write but the stop's comes from a send that found the
     * loop's flag clear, which happens at most once per drain. */
    ASSERT_LE(s.wakeup_writes, s.wakeups + 2);
    printf("# %d sends: %llu eventfd writes, %u calls\n", BURST + 1,
           (unsigned long long)s.wakeup_writes, atomic_load(&w.calls));
    pp_async_stop(loop, &w.async);
    free_loop(loop);
}

/* ---- timers ------------------------------------------------------------ */

typedef struct tick {
    pp_timer timer;
    int id;
    uint64_t started;
    uint64_t delay;
    uint64_t fired_at;
    int fires;
} tick;

static int order[128];
static int norder;

static void
record(pp_loop *loop, pp_timer *t)
{
    tick *k = t->data;

    (void)loop;
    k->fired_at = pp_now_ns();
    k->fires++;
    order[norder++] = k->id;
}

static void
run_until(pp_loop *loop, int *counter, int target)
{
    while (*counter < target)
        ASSERT_EQ(pp_loop_run_once(loop, -1), 0);
}

static void
test_timers_fire_in_order(void)
{
    static const int delays[] = {30, 10, 20, 10, 0};
    static const int expect[] = {4, 1, 3, 2, 0};
    pp_loop *loop = new_loop();
    tick k[5];
    int i;

    memset(k, 0, sizeof(k));
    norder = 0;
    for (i = 0; i < 5; i++) {
        k[i].id = i;
        k[i].delay = (uint64_t)delays[i] * MS;
        k[i].started = pp_now_ns();
        ASSERT_EQ(pp_timer_start(loop, &k[i].timer, k[i].delay, 0, record,
                                 &k[i]), 0);
        ASSERT_TRUE(pp_timer_active(&k[i].timer));
    }
    run_until(loop, &norder, 5);
    for (i = 0; i < 5; i++) {
        ASSERT_EQ(order[i], expect[i]);
        ASSERT_EQ(k[i].fires, 1);
        ASSERT_TRUE(!pp_timer_active(&k[i].timer));
        /* Never early. */
        ASSERT_GE(k[i].fired_at, k[i].started + k[i].delay);
    }
    ASSERT_EQ(stats(loop).timers_fired, 5);
    free_loop(loop);
}

/* Timers given the very same deadline fire in the order they were started
 * (the heap orders by (deadline, seq)), also with earlier and later timers
 * mixed in and some of them cancelled and restarted.  pp_timer_start()
 * reads the clock for each timer, so only pp_timer_start_at() can make
 * deadlines really equal. */
#define NSAME 40

static void
test_timers_same_deadline_fire_in_start_order(void)
{
    pp_loop *loop = new_loop();
    tick same[NSAME], other[NSAME];
    uint64_t deadline = pp_now_ns() + 5 * MS;
    uint32_t seed = 12345;
    int i, n = 0;

    memset(same, 0, sizeof(same));
    memset(other, 0, sizeof(other));
    norder = 0;
    for (i = 0; i < NSAME; i++) {
        seed = seed * 1103515245u + 12345u;
        other[i].id = 1000 + i;
        /* Before, at or after the shared deadline, in no order. */
        ASSERT_EQ(pp_timer_start_at(loop, &other[i].timer,
                                    deadline - 2 * MS + (seed >> 16) % 5 * MS,
                                    0, record, &other[i]), 0);
        same[i].id = i;
        ASSERT_EQ(pp_timer_start_at(loop, &same[i].timer, deadline, 0, record,
                                    &same[i]), 0);
    }
    /* A restarted timer goes to the back of its deadline's line. */
    pp_timer_stop(loop, &same[3].timer);
    ASSERT_EQ(pp_timer_start_at(loop, &same[3].timer, deadline, 0, record,
                                &same[3]), 0);
    pp_timer_stop(loop, &other[7].timer);
    while (n < 2 * NSAME - 1) {
        ASSERT_EQ(pp_loop_run_once(loop, -1), 0);
        n = norder;
    }
    {
        int prev = -1, seen = 0;
        for (i = 0; i < norder; i++) {
            int id = order[i];
            if (id >= 1000)
                continue;
            if (id == 3) {           /* restarted: last */
                ASSERT_EQ(seen, NSAME - 1);
                continue;
            }
            ASSERT_LT(prev, id);
            prev = id;
            seen++;
        }
        ASSERT_EQ(seen, NSAME - 1);
    }
    for (i = 0; i < NSAME; i++)
        ASSERT_EQ(same[i].fires, 1);
    free_loop(loop);
}

/* A delay or period too big to add to the clock saturates: the timer is
 * not due before UINT64_MAX, where a wrapped deadline would fire at once. */
static void
test_timer_huge_delay_saturates(void)
{
    pp_loop *loop = new_loop();
    tick late, later, beat, soon;

    memset(&late, 0, sizeof late);
    memset(&later, 0, sizeof later);
    memset(&beat, 0, sizeof beat);
    memset(&soon, 0, sizeof soon);
    norder = 0;
    late.id = 1;
    later.id = 2;
    beat.id = 3;
    soon.id = 4;
    ASSERT_EQ(pp_timer_start(loop, &late.timer, UINT64_MAX, 0, record, &late), 0);
    ASSERT_EQ(pp_timer_start(loop, &later.timer, UINT64_MAX - 10, 0, record,
                             &later), 0);
    ASSERT_EQ(pp_timer_start(loop, &beat.timer, 0, UINT64_MAX, record, &beat), 0);
    ASSERT_EQ(late.timer.deadline, UINT64_MAX);
    ASSERT_EQ(later.timer.deadline, UINT64_MAX);
    ASSERT_EQ(pp_timer_start(loop, &soon.timer, 20 * MS, 0, record, &soon), 0);
    run_until(loop, &soon.fires, 1);
    ASSERT_EQ(late.fires, 0);
    ASSERT_EQ(later.fires, 0);
    ASSERT_EQ(beat.fires, 1);          /* once, then not before UINT64_MAX */
    ASSERT_EQ(beat.timer.deadline, UINT64_MAX);
    ASSERT_TRUE(pp_timer_active(&late.timer) && pp_timer_active(&beat.timer));
    pp_timer_stop(loop, &late.timer);
    pp_timer_stop(loop, &later.timer);
    pp_timer_stop(loop, &beat.timer);
    free_loop(loop);
}

/* Many timers with random delays, a third cancelled: the rest fire in
 * (deadline, start order) order, the cancelled never. */
#define NRAND 2000

static pp_timer *rand_fired[NRAND];
static int nrand_fired;

static void
rand_record(pp_loop *loop, pp_timer *t)
{
    (void)loop;
    rand_fired[nrand_fired++] = t;
}

static void
test_timer_heap_random(void)
{
    pp_loop *loop = new_loop();
    pp_timer *t = calloc(NRAND, sizeof(*t));
    unsigned seed = 12345;
    int i, live = 0;

    ASSERT_NOT_NULL(t);
    nrand_fired = 0;
    for (i = 0; i < NRAND; i++) {
        seed = seed * 1103515245u + 12345u;
        /* Few distinct delays, so that equal deadlines are likely. */
        ASSERT_EQ(pp_timer_start(loop, &t[i], (seed >> 16) % 8 * MS, 0,
                                 rand_record, NULL), 0);
    }
    for (i = 0; i < NRAND; i += 3)
        pp_timer_stop(loop, &t[i]);
    for (i = 0; i < NRAND; i++)
        live += pp_timer_active(&t[i]);
    /* Restarting an active timer moves it, it does not duplicate it. */
    ASSERT_EQ(pp_timer_start(loop, &t[1], 1 * MS, 0, rand_record, NULL), 0);
    run_until(loop, &nrand_fired, live);
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(nrand_fired, live);
    for (i = 1; i < nrand_fired; i++) {
        pp_timer *a = rand_fired[i - 1], *b = rand_fired[i];

        ASSERT_TRUE(a->deadline < b->deadline ||
                    (a->deadline == b->deadline && a->seq < b->seq));
        ASSERT_NE((b - t) % 3, 0);
    }
    free(t);
    free_loop(loop);
}

static void
periodic_fire(pp_loop *loop, pp_timer *t)
{
    tick *k = t->data;
    uint64_t now = pp_now_ns();

    k->fires++;
    /* The k-th firing is due k periods after the start, at the earliest. */
    ASSERT_GE(now, k->started + (uint64_t)k->fires * k->delay);
    if (k->fires == 5) {
        pp_timer_stop(loop, t);
        free(k);         /* stopping from its own callback frees it */
        pp_loop_stop(loop);
    }
}

static void
test_timer_periodic(void)
{
    pp_loop *loop = new_loop();
    tick *k = calloc(1, sizeof(*k));

    k->delay = 3 * MS;
    k->started = pp_now_ns();
    ASSERT_EQ(pp_timer_start(loop, &k->timer, k->delay, k->delay,
                             periodic_fire, k), 0);
    ASSERT_EQ(pp_loop_run(loop), 0);   /* the fifth firing stops it */
    ASSERT_EQ(stats(loop).timers_fired, 5);
    free_loop(loop);
}

/* A periodic timer that fell far behind fires once, not in a burst. */
static void
test_timer_periodic_skips_missed(void)
{
    pp_loop *loop = new_loop();
    tick k = {0};

    norder = 0;
    ASSERT_EQ(pp_timer_start(loop, &k.timer, 1 * MS, 1 * MS, record, &k), 0);
    sleep_us(20000);
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(k.fires, 1);
    ASSERT_TRUE(k.timer.deadline > pp_loop_now(loop));
    pp_timer_stop(loop, &k.timer);
    free_loop(loop);
}

static tick *to_cancel;

static void
cancel_other(pp_loop *loop, pp_timer *t)
{
    record(loop, t);
    pp_timer_stop(loop, &to_cancel->timer);
}

static void
restart_self(pp_loop *loop, pp_timer *t)
{
    tick *k = t->data;

    record(loop, t);
    if (k->fires < 3)
        ASSERT_EQ(pp_timer_start(loop, t, 0, 0, restart_self, k), 0);
}

static void
test_timer_cancel(void)
{
    pp_loop *loop = new_loop();
    tick a = {.id = 0}, b = {.id = 1}, c = {.id = 2}, d = {.id = 3};
    tick e = {.id = 4};

    norder = 0;
    /* Cancelled before it is due. */
    pp_timer_start(loop, &a.timer, 5 * MS, 0, record, &a);
    pp_timer_start(loop, &b.timer, 10 * MS, 0, record, &b);
    pp_timer_stop(loop, &a.timer);
    ASSERT_TRUE(!pp_timer_active(&a.timer));
    pp_timer_stop(loop, &a.timer);     /* twice is harmless */
    run_until(loop, &norder, 1);
    ASSERT_EQ(order[0], 1);
    ASSERT_EQ(a.fires, 0);

    /* c and d are both due in one timer phase; c cancels d. */
    norder = 0;
    to_cancel = &d;
    pp_timer_start(loop, &c.timer, 0, 0, cancel_other, &c);
    pp_timer_start(loop, &d.timer, 0, 0, record, &d);
    sleep_us(2000);
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(norder, 1);
    ASSERT_EQ(c.fires, 1);
    ASSERT_EQ(d.fires, 0);
    ASSERT_TRUE(!pp_timer_active(&d.timer));

    /* A timer restarted with no delay from its callback fires once per
     * iteration: the timer phase does not run it again. */
    norder = 0;
    pp_timer_start(loop, &e.timer, 0, 0, restart_self, &e);
    sleep_us(1000);
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(e.fires, 1);
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(e.fires, 2);
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(e.fires, 3);
    ASSERT_TRUE(!pp_timer_active(&e.timer));
    free_loop(loop);
}

static void
stop_loop_timer(pp_loop *loop, pp_timer *t)
{
    (void)t;
    pp_loop_stop(loop);
}

/* The poll sleeps until the earliest timer, no less. */
static void
test_timer_bounds_poll(void)
{
    pp_loop *loop = new_loop();
    pp_timer t = {0};
    uint64_t start = pp_now_ns();

    pp_timer_start(loop, &t, 20 * MS, 0, stop_loop_timer, NULL);
    ASSERT_EQ(pp_loop_run(loop), 0);
    ASSERT_GE(pp_now_ns() - start, 20 * MS);
    /* Blocking polls, not a spin: a handful of iterations. */
    ASSERT_LE(stats(loop).iterations, 10);
    free_loop(loop);
}

/* A poll that fails still runs the pending phase (closing goes through
 * it), and pp_loop_run() reports the failure.  The epoll fd is replaced by
 * /dev/null, which epoll_wait() refuses (EINVAL).  epoll only: io_uring does
 * not enter the kernel for a poll that has nothing to submit or wait for. */
static void
count_pending(pp_loop *loop, pp_pending *p)
{
    (void)loop;
    (*(int *)p->data)++;
}

static void
test_failed_poll_still_runs_pending_calls(void)
{
    pp_loop *loop = new_loop();
    pp_pending p = {0};
    int calls = 0, null, epfd = -1, fd;
    char path[64], target[64];

    if (strcmp(pp_loop_backend(loop), "epoll") != 0) {
        printf("# skipped: the %s poller\n", pp_loop_backend(loop));
        free_loop(loop);
        return;
    }
    for (fd = 0; fd < 1024; fd++) {
        ssize_t n;
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        n = readlink(path, target, sizeof target - 1);
        if (n > 0) {
            target[n] = 0;
            if (strcmp(target, "anon_inode:[eventpoll]") == 0)
                epfd = fd;           /* the last one made: this loop's */
        }
    }
    ASSERT_GE(epfd, 0);
    null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(null, 0);
    ASSERT_EQ(dup2(null, epfd), epfd);
    close(null);
    p.data = &calls;
    pp_pending_add(loop, &p, count_pending);
    ASSERT_EQ(pp_loop_run_once(loop, 0), -EINVAL);
    ASSERT_EQ(calls, 1);
    pp_pending_add(loop, &p, count_pending);
    ASSERT_EQ(pp_loop_run(loop), -EINVAL);
    ASSERT_EQ(calls, 2);
    free_loop(loop);
}

/* ---- file descriptors -------------------------------------------------- */

typedef struct watch {
    pp_io io;
    int calls;
    unsigned events;
    struct watch *partner;
    int fd;
} watch;

static void
note_event(pp_loop *loop, pp_io *io, unsigned events)
{
    watch *w = io->data;

    (void)loop;
    w->calls++;
    w->events |= events;
}

static void
make_pair(int sv[2])
{
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                         0, sv), 0);
}

static void
test_io_edge_triggered(void)
{
    pp_loop *loop = new_loop();
    watch w = {0};
    int sv[2];
    char c;

    make_pair(sv);
    ASSERT_EQ(pp_io_register(loop, &w.io, sv[0], PP_READABLE, note_event, &w),
              0);
    ASSERT_EQ(pp_io_register(loop, &w.io, sv[0], PP_READABLE, note_event, &w),
              -EEXIST);
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(w.calls, 0);
    ASSERT_EQ(write(sv[1], "x", 1), 1);
    ASSERT_EQ(pp_loop_run_once(loop, 1000), 0);
    ASSERT_EQ(w.calls, 1);
    ASSERT_EQ(w.events, PP_READABLE);
    /* Not read, but no new edge: no new event. */
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(w.calls, 1);
    ASSERT_EQ(write(sv[1], "y", 1), 1);
    ASSERT_EQ(pp_loop_run_once(loop, 1000), 0);
    ASSERT_EQ(w.calls, 2);
    ASSERT_EQ(read(sv[0], &c, 1), 1);
    /* The peer shuts its writing side: PP_RDHUP, before any read says so. */
    w.events = 0;
    ASSERT_EQ(shutdown(sv[1], SHUT_WR), 0);
    ASSERT_EQ(pp_loop_run_once(loop, 1000), 0);
    ASSERT_EQ(w.calls, 3);
    ASSERT_EQ(w.events, PP_READABLE | PP_RDHUP);
    ASSERT_EQ(pp_io_unregister(loop, &w.io), 0);
    ASSERT_EQ(pp_io_unregister(loop, &w.io), 0);   /* twice is harmless */
    close(sv[0]);
    close(sv[1]);
    free_loop(loop);
}

static void
test_io_modify(void)
{
    pp_loop *loop = new_loop();
    watch w = {0};
    int sv[2];

    make_pair(sv);
    ASSERT_EQ(pp_io_modify(loop, &w.io, PP_WRITABLE), -ENOENT);
    ASSERT_EQ(pp_io_register(loop, &w.io, sv[0], PP_READABLE, note_event, &w),
              0);
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(w.calls, 0);
    /* Adding PP_WRITABLE to a writable socket reports it at once. */
    ASSERT_EQ(pp_io_modify(loop, &w.io, PP_READABLE | PP_WRITABLE), 0);
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(w.calls, 1);
    ASSERT_EQ(w.events, PP_WRITABLE);
    ASSERT_EQ(pp_io_modify(loop, &w.io, PP_READABLE), 0);
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(w.calls, 1);
    /* Peer gone: readable and hung up. */
    close(sv[1]);
    ASSERT_EQ(pp_loop_run_once(loop, 1000), 0);
    ASSERT_EQ(w.calls, 2);
    ASSERT_TRUE(w.events & PP_READABLE);
    ASSERT_TRUE(w.events & PP_HANGUP);
    ASSERT_EQ(pp_io_unregister(loop, &w.io), 0);
    close(sv[0]);
    free_loop(loop);
}

/* Each callback unregisters and frees itself and its partner, whose event
 * is already fetched for this iteration: the partner must never be called
 * (under ASan a call would be a use after free). */
#define NPAIRS 16

static int self_unreg_calls;

static void
unregister_both(pp_loop *loop, pp_io *io, unsigned events)
{
    watch *w = io->data, *p = w->partner;

    (void)events;
    self_unreg_calls++;
    ASSERT_EQ(pp_io_unregister(loop, &w->io), 0);
    close(w->fd);
    free(w);
    if (p) {
        p->partner = NULL;
        ASSERT_EQ(pp_io_unregister(loop, &p->io), 0);
        close(p->fd);
        free(p);
    }
}

static void
test_io_unregister_during_dispatch(void)
{
    pp_loop *loop = new_loop();
    int i, sv[2];

    self_unreg_calls = 0;
    for (i = 0; i < NPAIRS; i++) {
        watch *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));

        make_pair(sv);
        a->fd = sv[0];
        b->fd = sv[1];
        a->partner = b;
        b->partner = a;
        /* Both ends writable at once: both events come in one poll. */
        ASSERT_EQ(pp_io_register(loop, &a->io, a->fd, PP_WRITABLE,
                                 unregister_both, a), 0);
        ASSERT_EQ(pp_io_register(loop, &b->io, b->fd, PP_WRITABLE,
                                 unregister_both, b), 0);
    }
    ASSERT_EQ(pp_loop_run_once(loop, 1000), 0);
    ASSERT_EQ(self_unreg_calls, NPAIRS);
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(self_unreg_calls, NPAIRS);
    free_loop(loop);
}

/* A callback that closes its fd and registers a new one, likely with the
 * same number, in the same iteration. */
static watch *reuse_new;

static void
close_and_reopen(pp_loop *loop, pp_io *io, unsigned events)
{
    watch *w = io->data;
    int sv[2];

    (void)events;
    w->calls++;
    pp_io_unregister(loop, io);
    close(w->fd);
    make_pair(sv);
    reuse_new->fd = sv[0];
    close(sv[1]);   /* the new fd hangs up: it has news of its own */
    ASSERT_EQ(pp_io_register(loop, &reuse_new->io, sv[0], PP_READABLE,
                             note_event, reuse_new), 0);
}

static void
test_io_fd_reuse_in_dispatch(void)
{
    pp_loop *loop = new_loop();
    watch old = {0}, fresh = {0};
    int sv[2];

    reuse_new = &fresh;
    make_pair(sv);
    old.fd = sv[0];
    ASSERT_EQ(write(sv[1], "x", 1), 1);
    ASSERT_EQ(pp_io_register(loop, &old.io, sv[0], PP_READABLE,
                             close_and_reopen, &old), 0);
    ASSERT_EQ(pp_loop_run_once(loop, 1000), 0);
    ASSERT_EQ(old.calls, 1);
    ASSERT_EQ(fresh.calls, 0);
    /* ...reported by the next poll, to the new watcher only. */
    ASSERT_EQ(pp_loop_run_once(loop, 1000), 0);
    ASSERT_EQ(fresh.calls, 1);
    ASSERT_TRUE(fresh.events & PP_HANGUP);
    pp_io_unregister(loop, &fresh.io);
    close(fresh.fd);
    close(sv[1]);
    free_loop(loop);
}

/* ---- pending calls ----------------------------------------------------- */

typedef struct deferred {
    pp_pending pending;
    pp_io io;
    int runs;
    int requeue;
    uint64_t iteration;
    pp_loop *loop;
} deferred;

static void
deferred_run(pp_loop *loop, pp_pending *p)
{
    deferred *d = pp_container_of(p, deferred, pending);

    /* Callbacks cannot run the loop they are called from. */
    ASSERT_EQ(pp_loop_run_once(loop, 0), -EBUSY);
    ASSERT_EQ(pp_loop_destroy(loop), -EBUSY);
    d->runs++;
    d->iteration = stats(loop).iterations;
    if (d->requeue-- > 0)
        pp_pending_add(loop, p, deferred_run);
}

static void
defer_from_io(pp_loop *loop, pp_io *io, unsigned events)
{
    deferred *d = io->data;

    (void)events;
    pp_pending_add(loop, &d->pending, deferred_run);
    pp_pending_add(loop, &d->pending, deferred_run);   /* no-op */
    ASSERT_EQ(d->runs, 0);
    pp_io_unregister(loop, io);
}

static void
test_pending_calls(void)
{
    pp_loop *loop = new_loop();
    deferred d = {0}, e = {0};
    int sv[2];

    /* Queued from an I/O callback: runs in the same iteration, once. */
    make_pair(sv);
    ASSERT_EQ(pp_io_register(loop, &d.io, sv[0], PP_WRITABLE, defer_from_io,
                             &d), 0);
    ASSERT_EQ(pp_loop_run_once(loop, 1000), 0);
    ASSERT_EQ(d.runs, 1);
    ASSERT_EQ(d.iteration, 0);     /* before the iteration count moved */
    ASSERT_TRUE(!pp_pending_queued(&d.pending));

    /* Requeueing itself: the next iteration, which does not block. */
    d.requeue = 1;
    pp_pending_add(loop, &d.pending, deferred_run);
    ASSERT_EQ(pp_loop_run_once(loop, -1), 0);
    ASSERT_EQ(d.runs, 2);
    ASSERT_TRUE(pp_pending_queued(&d.pending));
    ASSERT_EQ(pp_loop_destroy(loop), -EBUSY);
    ASSERT_EQ(pp_loop_run_once(loop, -1), 0);
    ASSERT_EQ(d.runs, 3);

    /* Cancelled: never runs. */
    pp_pending_add(loop, &e.pending, deferred_run);
    pp_pending_cancel(loop, &e.pending);
    pp_pending_cancel(loop, &e.pending);
    ASSERT_EQ(pp_loop_run_once(loop, 0), 0);
    ASSERT_EQ(e.runs, 0);
    close(sv[0]);
    close(sv[1]);
    free_loop(loop);
}

static void
test_destroy_refuses_busy_loop(void)
{
    pp_loop *loop = new_loop();
    pp_timer t = {0};
    pp_async a;
    watch w = {0};
    int sv[2];

    make_pair(sv);
    pp_io_register(loop, &w.io, sv[0], PP_READABLE, note_event, &w);
    ASSERT_EQ(pp_loop_destroy(loop), -EBUSY);
    pp_io_unregister(loop, &w.io);
    pp_timer_start(loop, &t, 1000 * MS, 0, record, NULL);
    ASSERT_EQ(pp_loop_destroy(loop), -EBUSY);
    pp_timer_stop(loop, &t);
    pp_async_start(loop, &a, count_call, NULL);
    ASSERT_EQ(pp_loop_destroy(loop), -EBUSY);
    pp_async_stop(loop, &a);
    close(sv[0]);
    close(sv[1]);
    free_loop(loop);
}

/* ---- stopping ---------------------------------------------------------- */

typedef struct stopper {
    pp_loop *loop;
    long delay_us;
} stopper;

static void
stop_later(void *arg)
{
    stopper *s = arg;

    sleep_us(s->delay_us);
    pp_loop_stop(s->loop);
}

static void
test_stop_from_another_thread(void)
{
    pp_loop *loop = new_loop();
    stopper s = {loop, 20000};
    uint64_t start = pp_now_ns();
    pp_thread t;

    /* Nothing registered: the poll blocks with no timeout. */
    ASSERT_EQ(pp_thread_start(&t, stop_later, &s), 0);
    ASSERT_EQ(pp_loop_run(loop), 0);
    ASSERT_GE(pp_now_ns() - start, 20 * MS);
    ASSERT_EQ(pp_thread_join(&t), 0);
    /* A stop before run is not lost; run consumes it. */
    pp_loop_stop(loop);
    ASSERT_EQ(pp_loop_run(loop), 0);
    free_loop(loop);
}

typedef struct runner {
    pp_loop *loop;
    pp_timer timer;
    atomic_int ticks;
    int rc;
} runner;

static void
runner_tick(pp_loop *loop, pp_timer *t)
{
    runner *r = t->data;

    (void)loop;
    atomic_fetch_add(&r->ticks, 1);
}

static void
run_loop_thread(void *arg)
{
    runner *r = arg;

    pp_timer_start(r->loop, &r->timer, 1 * MS, 1 * MS, runner_tick, r);
    r->rc = pp_loop_run(r->loop);
    pp_timer_stop(r->loop, &r->timer);
}

/* The loop on a worker thread, stopped by the main thread. */
static void
test_stop_loop_on_worker(void)
{
    runner r = {0};
    pp_thread t;

    r.loop = new_loop();
    r.rc = -1;
    ASSERT_EQ(pp_thread_start(&t, run_loop_thread, &r), 0);
    while (atomic_load(&r.ticks) < 3)
        sleep_us(1000);
    pp_loop_stop(r.loop);
    ASSERT_EQ(pp_thread_join(&t), 0);
    ASSERT_EQ(r.rc, 0);
    free_loop(r.loop);
}

int
main(void)
{
    PP_TEST_BEGIN();
    RUN_TEST(test_create_destroy);
    RUN_TEST(test_wakeup_coalesces);
    RUN_TEST(test_wakeup_two_handles_one_write);
    RUN_TEST(test_async_stop_during_drain);
    RUN_TEST(test_wakeup_ping_pong);
    RUN_TEST(test_wakeup_burst);
    RUN_TEST(test_timers_fire_in_order);
    RUN_TEST(test_timers_same_deadline_fire_in_start_order);
    RUN_TEST(test_timer_huge_delay_saturates);
    RUN_TEST(test_timer_heap_random);
    RUN_TEST(test_timer_periodic);
    RUN_TEST(test_timer_periodic_skips_missed);
    RUN_TEST(test_timer_cancel);
    RUN_TEST(test_timer_bounds_poll);
    RUN_TEST(test_failed_poll_still_runs_pending_calls);
    RUN_TEST(test_io_edge_triggered);
    RUN_TEST(test_io_modify);
    RUN_TEST(test_io_unregister_during_dispatch);
    RUN_TEST(test_io_fd_reuse_in_dispatch);
    RUN_TEST(test_pending_calls);
    RUN_TEST(test_destroy_refuses_busy_loop);
    RUN_TEST(test_stop_from_another_thread);
    RUN_TEST(test_stop_loop_on_worker);
    return PP_TEST_DONE();
}
