/* test_queue.c -- pp_queue (intrusive blocking FIFO) and pp_thread. */
#include "pp_queue.h"
#include "pp_sync.h"
#include "pp_thread.h"
#include "pp_test.h"

#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

typedef struct item {
    pp_qnode link;
    unsigned producer;
    unsigned seq;
} item;

#define ITEM(n) pp_container_of(n, item, link)

static void
sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};

    nanosleep(&ts, NULL);
}

/* Consumers blocked in pthread_cond_wait, read under the queue's lock. */
static int
sleepers(pp_queue *q)
{
    int n;

    pthread_mutex_lock(&q->mu);
    n = q->sleepers;
    pthread_mutex_unlock(&q->mu);
    return n;
}

static void
wait_for_sleepers(pp_queue *q, int n)
{
    while (sleepers(q) < n)
        sleep_us(100);
}

static void
test_fifo(void)
{
    pp_queue q;
    item it[100];
    unsigned i;

    ASSERT_EQ(pp_queue_init(&q), 0);
    ASSERT_EQ(pp_queue_len(&q), 0);
    for (i = 0; i < 100; i++) {
        it[i].seq = i;
        ASSERT_EQ(pp_queue_push(&q, &it[i].link), 0);
        ASSERT_EQ(pp_queue_len(&q), i + 1);
    }
    for (i = 0; i < 100; i++) {
        /* Alternate the blocking and non-blocking pops. */
        pp_qnode *n = i % 2 ? pp_queue_pop(&q, 0) : pp_queue_trypop(&q);

        ASSERT_NOT_NULL(n);
        ASSERT_PTR_EQ(n, &it[i].link);
        ASSERT_EQ(ITEM(n)->seq, i);
        ASSERT_NULL(n->next);
        ASSERT_EQ(pp_queue_len(&q), 99 - i);
    }
    ASSERT_NULL(pp_queue_trypop(&q));
    /* Emptied by pops, the queue takes pushes again (tail was reset). */
    ASSERT_EQ(pp_queue_push(&q, &it[0].link), 0);
    ASSERT_EQ(pp_queue_push(&q, &it[1].link), 0);
    ASSERT_PTR_EQ(pp_queue_trypop(&q), &it[0].link);
    ASSERT_PTR_EQ(pp_queue_trypop(&q), &it[1].link);
    pp_queue_destroy(&q);
}

static void
test_trypop_empty(void)
{
    pp_queue q;

    ASSERT_EQ(pp_queue_init(&q), 0);
    ASSERT_NULL(pp_queue_trypop(&q));
    ASSERT_NULL(pp_queue_take_all(&q));
    ASSERT_EQ(pp_queue_len(&q), 0);
    ASSERT_NULL(pp_queue_trypop(&q));
    pp_queue_destroy(&q);
}

/* Checks that chain is exactly it[first..first+n-1], oldest first. */
static void
check_chain(pp_qnode *chain, item *it, unsigned first, unsigned n)
{
    unsigned i;

    for (i = 0; i < n; i++) {
        ASSERT_NOT_NULL(chain);
        ASSERT_PTR_EQ(chain, &it[first + i].link);
        chain = chain->next;
    }
    ASSERT_NULL(chain);
}

static void
test_take_all_order(void)
{
    pp_queue q;
    item it[20];
    unsigned i;

    ASSERT_EQ(pp_queue_init(&q), 0);
    for (i = 0; i < 10; i++)
        ASSERT_EQ(pp_queue_push(&q, &it[i].link), 0);
    check_chain(pp_queue_take_all(&q), it, 0, 10);
    ASSERT_EQ(pp_queue_len(&q), 0);
    ASSERT_NULL(pp_queue_take_all(&q));
    ASSERT_NULL(pp_queue_trypop(&q));

    /* pop_all on a non-empty queue returns at once, whatever the spin. */
    for (i = 10; i < 20; i++)
        ASSERT_EQ(pp_queue_push(&q, &it[i].link), 0);
    ASSERT_EQ(pp_queue_len(&q), 10);
    check_chain(pp_queue_pop_all(&q, 1000000), it, 10, 10);
    ASSERT_EQ(pp_queue_len(&q), 0);

    /* A single node comes back as a chain of one; the queue is reusable. */
    ASSERT_EQ(pp_queue_push(&q, &it[3].link), 0);
    check_chain(pp_queue_pop_all(&q, 0), it, 3, 1);
    ASSERT_EQ(pp_queue_push(&q, &it[4].link), 0);
    ASSERT_EQ(pp_queue_push(&q, &it[5].link), 0);
    ASSERT_PTR_EQ(pp_queue_pop(&q, 0), &it[4].link);
    check_chain(pp_queue_take_all(&q), it, 5, 1);
    pp_queue_destroy(&q);
}

/* A consumer that blocks in pop or pop_all and records what it got. */
typedef struct blocker {
    pp_queue *q;
    long spin_ns;
    int use_pop_all;
    pp_qnode *got;
    atomic_int done;
} blocker;

static void
blocker_run(void *arg)
{
    blocker *b = arg;

    if (b->use_pop_all)
        b->got = pp_queue_pop_all(b->q, b->spin_ns);
    else
        b->got = pp_queue_pop(b->q, b->spin_ns);
    atomic_store(&b->done, 1);
}

static void
test_pop_blocks_until_push(void)
{
    long spins[2] = {0, 20000};
    int s, all;

    for (s = 0; s < 2; s++) {
        for (all = 0; all < 2; all++) {
            pp_queue q;
            item it[1];
            blocker b = {&q, spins[s], all, NULL, 0};
            pp_thread t;

            ASSERT_EQ(pp_queue_init(&q), 0);
            ASSERT_EQ(pp_thread_start(&t, blocker_run, &b), 0);
            wait_for_sleepers(&q, 1);
            ASSERT_EQ(atomic_load(&b.done), 0);
            ASSERT_EQ(pp_queue_push(&q, &it[0].link), 0);
            ASSERT_EQ(pp_thread_join(&t), 0);
            ASSERT_PTR_EQ(b.got, &it[0].link);
            ASSERT_NULL(b.got->next);
            ASSERT_EQ(pp_queue_len(&q), 0);
            pp_queue_destroy(&q);
        }
    }
}

static void
test_close_wakes_consumers(void)
{
    enum { N = 4 };
    long spins[2] = {0, 20000};
    int s, i;

    for (s = 0; s < 2; s++) {
        pp_queue q;
        pp_qnode sentinel;
        blocker b[N];
        pp_thread t[N];

        ASSERT_EQ(pp_queue_init(&q), 0);
        for (i = 0; i < N; i++) {
            b[i] = (blocker){&q, spins[s], i % 2, &sentinel, 0};
            ASSERT_EQ(pp_thread_start(&t[i], blocker_run, &b[i]), 0);
        }
        /* Every consumer is asleep in pthread_cond_wait, not spinning. */
        wait_for_sleepers(&q, N);
        for (i = 0; i < N; i++)
            ASSERT_EQ(atomic_load(&b[i].done), 0);
        pp_queue_close(&q);
        for (i = 0; i < N; i++) {
            ASSERT_EQ(pp_thread_join(&t[i]), 0);
            ASSERT_NULL(b[i].got);
        }
        ASSERT_EQ(sleepers(&q), 0);
        /* Closed and empty: nothing blocks any more. */
        ASSERT_NULL(pp_queue_pop(&q, 0));
        ASSERT_NULL(pp_queue_pop(&q, 20000));
        ASSERT_NULL(pp_queue_pop_all(&q, 0));
        pp_queue_destroy(&q);
    }
}

static void
test_close_drains(void)
{
    pp_queue q;
    item it[5];
    unsigned i;

    ASSERT_EQ(pp_queue_init(&q), 0);
    for (i = 0; i < 3; i++)
        ASSERT_EQ(pp_queue_push(&q, &it[i].link), 0);
    pp_queue_close(&q);

    /* Push after close is refused and leaves the queue unchanged. */
    ASSERT_EQ(pp_queue_push(&q, &it[3].link), -1);
    ASSERT_EQ(pp_queue_len(&q), 3);

    /* What was queued before the close is still delivered, in order. */
    ASSERT_PTR_EQ(pp_queue_pop(&q, 0), &it[0].link);
    ASSERT_PTR_EQ(pp_queue_trypop(&q), &it[1].link);
    ASSERT_PTR_EQ(pp_queue_pop(&q, 20000), &it[2].link);
    ASSERT_EQ(pp_queue_len(&q), 0);
    ASSERT_NULL(pp_queue_pop(&q, 0));
    ASSERT_NULL(pp_queue_trypop(&q));
    ASSERT_EQ(pp_queue_push(&q, &it[0].link), -1);
    ASSERT_EQ(pp_queue_len(&q), 0);
    ASSERT_NULL(pp_queue_pop(&q, 0));

    /* Same for the chain forms. */
    pp_queue_destroy(&q);
    ASSERT_EQ(pp_queue_init(&q), 0);
    for (i = 0; i < 4; i++)
        ASSERT_EQ(pp_queue_push(&q, &it[i].link), 0);
    pp_queue_close(&q);
    check_chain(pp_queue_pop_all(&q, 0), it, 0, 4);
    ASSERT_NULL(pp_queue_pop_all(&q, 0));
    ASSERT_NULL(pp_queue_take_all(&q));
    pp_queue_destroy(&q);
}

/* ---- stress: 4 producers x 200,000 nodes, 4 consumers ---- */

#define PRODUCERS 4
#define CONSUMERS 4
#define PER_PRODUCER 200000u

typedef struct stress {
    pp_queue q;
    item *items;             /* PRODUCERS * PER_PRODUCER */
    atomic_uint *seen;       /* times each item was consumed */
    long spin_ns;
    atomic_int go;
} stress;

typedef struct worker {
    stress *s;
    unsigned id;
    size_t consumed;
    size_t max_len;          /* largest pp_queue_len a producer saw */
} worker;

static void
producer_run(void *arg)
{
    worker *w = arg;
    stress *s = w->s;
    item *mine = s->items + (size_t)w->id * PER_PRODUCER;
    unsigned i;
    size_t len;

    while (!atomic_load(&s->go))
        pp_cpu_relax();
    for (i = 0; i < PER_PRODUCER; i++) {
        mine[i].producer = w->id;
        mine[i].seq = i;
        ASSERT_EQ(pp_queue_push(&s->q, &mine[i].link), 0);
        if ((i & 1023) == 0) {
            len = pp_queue_len(&s->q);
            ASSERT_LE(len, (size_t)PRODUCERS * PER_PRODUCER);
            if (len > w->max_len)
                w->max_len = len;
        }
    }
}

/* Marks one node consumed; pops of one consumer keep each producer's order
 * because the queue is a single FIFO. */
static void
consume(worker *w, pp_qnode *n, unsigned *last)
{
    stress *s = w->s;
    item *it = ITEM(n);
    size_t idx = (size_t)(it - s->items);

    ASSERT_LT(idx, (size_t)PRODUCERS * PER_PRODUCER);
    ASSERT_EQ(atomic_fetch_add_explicit(&s->seen[idx], 1,
                                        memory_order_relaxed), 0);
    ASSERT_LT(it->producer, PRODUCERS);
    ASSERT_EQ(idx, (size_t)it->producer * PER_PRODUCER + it->seq);
    /* last[] holds seq + 1 of the previous node from each producer. */
    ASSERT_GE(it->seq, last[it->producer]);
    last[it->producer] = it->seq + 1;
    w->consumed++;
}

static void
consumer_run(void *arg)
{
    worker *w = arg;
    stress *s = w->s;
    unsigned last[PRODUCERS] = {0};
    pp_qnode *n, *next;

    while (!atomic_load(&s->go))
        pp_cpu_relax();
    /* Each consumer uses a different API, so all four race each other:
     * 0 pop, 1 pop_all, 2 trypop then pop, 3 take_all then pop_all. */
    for (;;) {
        switch (w->id % 4) {
        case 0:
            n = pp_queue_pop(&s->q, s->spin_ns);
            break;
        case 1:
            n = pp_queue_pop_all(&s->q, s->spin_ns);
            break;
        case 2:
            if ((n = pp_queue_trypop(&s->q)) == NULL)
                n = pp_queue_pop(&s->q, s->spin_ns);
            break;
        default:
            if ((n = pp_queue_take_all(&s->q)) == NULL)
                n = pp_queue_pop_all(&s->q, s->spin_ns);
            break;
        }
        if (n == NULL)
            break;          /* closed and drained */
        for (; n; n = next) {
            next = n->next;
            consume(w, n, last);
        }
    }
}

static void
run_stress(long spin_ns)
{
    size_t total = (size_t)PRODUCERS * PER_PRODUCER, i, sum = 0;
    stress s;
    worker prod[PRODUCERS], cons[CONSUMERS];
    pp_thread pt[PRODUCERS], ct[CONSUMERS];
    unsigned k;

    ASSERT_EQ(pp_queue_init(&s.q), 0);
    s.items = calloc(total, sizeof(item));
    s.seen = calloc(total, sizeof(atomic_uint));
    ASSERT_NOT_NULL(s.items);
    ASSERT_NOT_NULL(s.seen);
    s.spin_ns = spin_ns;
    atomic_init(&s.go, 0);

    for (k = 0; k < CONSUMERS; k++) {
        cons[k] = (worker){&s, k, 0, 0};
        ASSERT_EQ(pp_thread_start(&ct[k], consumer_run, &cons[k]), 0);
    }
    for (k = 0; k < PRODUCERS; k++) {
        prod[k] = (worker){&s, k, 0, 0};
        ASSERT_EQ(pp_thread_start(&pt[k], producer_run, &prod[k]), 0);
    }
    atomic_store(&s.go, 1);
    for (k = 0; k < PRODUCERS; k++)
        ASSERT_EQ(pp_thread_join(&pt[k]), 0);
    /* Every push happened; closing lets the consumers drain and stop. */
    pp_queue_close(&s.q);
    for (k = 0; k < CONSUMERS; k++) {
        ASSERT_EQ(pp_thread_join(&ct[k]), 0);
        sum += cons[k].consumed;
    }

    ASSERT_EQ(sum, total);
    for (i = 0; i < total; i++) {
        if (atomic_load(&s.seen[i]) != 1)
            PP_TEST_FAIL("node %zu consumed %u times (spin_ns %ld)", i,
                         atomic_load(&s.seen[i]), spin_ns);
    }
    ASSERT_EQ(pp_queue_len(&s.q), 0);
    ASSERT_NULL(pp_queue_trypop(&s.q));
    ASSERT_EQ(pp_queue_push(&s.q, &s.items[0].link), -1);
    pp_queue_destroy(&s.q);
    free(s.items);
    free(s.seen);
}

static void
test_stress_spin0(void)
{
    run_stress(0);
}

static void
test_stress_spin20us(void)
{
    run_stress(20000);
}

/* ---- pp_thread ---- */

typedef struct thread_probe {
    int ran;
    int sigint_blocked;
    int sigterm_blocked;
} thread_probe;

static void
probe_run(void *arg)
{
    thread_probe *p = arg;
    sigset_t cur;

    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, NULL, &cur), 0);
    p->sigint_blocked = sigismember(&cur, SIGINT);
    p->sigterm_blocked = sigismember(&cur, SIGTERM);
    p->ran++;
}

static void
test_thread_start_join(void)
{
    enum { N = 8 };
    pp_thread t[N];
    thread_probe p[N];
    sigset_t before, after;
    int i;

    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, NULL, &before), 0);
    ASSERT_EQ(sigismember(&before, SIGINT), 0);
    for (i = 0; i < N; i++) {
        p[i] = (thread_probe){0, 0, 0};
        ASSERT_EQ(pp_thread_start(&t[i], probe_run, &p[i]), 0);
        ASSERT_PTR_EQ(t[i].arg, &p[i]);
    }
    for (i = 0; i < N; i++) {
        ASSERT_EQ(pp_thread_join(&t[i]), 0);
        ASSERT_EQ(p[i].ran, 1);
        /* Workers run with every signal blocked... */
        ASSERT_EQ(p[i].sigint_blocked, 1);
        ASSERT_EQ(p[i].sigterm_blocked, 1);
    }
    /* ...and the creating thread gets its own mask back. */
    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, NULL, &after), 0);
    ASSERT_EQ(sigismember(&after, SIGINT), 0);
    ASSERT_EQ(sigismember(&after, SIGTERM), sigismember(&before, SIGTERM));
}

static void
test_cpu_count(void)
{
    cpu_set_t set;
    int n = pp_cpu_count();

    ASSERT_GE(n, 1);
    ASSERT_LE(n, CPU_SETSIZE);
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        ASSERT_EQ(n, CPU_COUNT(&set));
}

int
main(void)
{
    PP_TEST_BEGIN();
    RUN_TEST(test_thread_start_join);
    RUN_TEST(test_cpu_count);
    RUN_TEST(test_fifo);
    RUN_TEST(test_trypop_empty);
    RUN_TEST(test_take_all_order);
    RUN_TEST(test_pop_blocks_until_push);
    RUN_TEST(test_close_wakes_consumers);
    RUN_TEST(test_close_drains);
    RUN_TEST(test_stress_spin0);
    RUN_TEST(test_stress_spin20us);
    return PP_TEST_DONE();
}
