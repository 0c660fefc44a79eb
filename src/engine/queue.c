/* queue.c -- see pp_queue.h. */
#include "pp_queue.h"
#include "pp_sync.h"

#include <errno.h>
#include <limits.h>

int
pp_queue_init(pp_queue *q)
{
    int rc;

    q->head = q->tail = NULL;
    atomic_init(&q->len, 0);
    atomic_init(&q->closed, 0);
    q->sleepers = 0;
    atomic_init(&q->spinners, 0);
    q->max_spinners = INT_MAX;
    if ((rc = pthread_mutex_init(&q->mu, NULL)) != 0)
        return rc;
    if ((rc = pthread_cond_init(&q->cv, NULL)) != 0) {
        pthread_mutex_destroy(&q->mu);
        return rc;
    }
    return 0;
}

void
pp_queue_set_max_spinners(pp_queue *q, int n)
{
    q->max_spinners = n < 0 ? 0 : n;
}

void
pp_queue_destroy(pp_queue *q)
{
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
}

static int
push(pp_queue *q, pp_qnode *node, size_t batch)
{
    size_t len;
    int wake;

    node->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (atomic_load(&q->closed)) {
        pthread_mutex_unlock(&q->mu);
        return -1;
    }
    if (q->tail)
        q->tail->next = node;
    else
        q->head = node;
    q->tail = node;
    len = atomic_fetch_add_explicit(&q->len, 1, memory_order_release) + 1;
    /* Signal only when someone sleeps and no spinning consumer is about to
     * take the node anyway (a consumer that leaves nodes behind wakes the
     * next sleeper itself, in pop). */
    wake = q->sleepers > 0 && len >= batch &&
           len > (size_t)atomic_load_explicit(&q->spinners, memory_order_relaxed);
    pthread_mutex_unlock(&q->mu);
    if (wake)
        pthread_cond_signal(&q->cv);
    return 0;
}

int
pp_queue_push(pp_queue *q, pp_qnode *node)
{
    return push(q, node, 1);
}

int
pp_queue_push_lazy(pp_queue *q, pp_qnode *node, size_t batch)
{
    return push(q, node, batch);
}

/* Unlinks the head; the lock is held and the queue is not empty. */
static pp_qnode *
unlink_head(pp_queue *q)
{
    pp_qnode *node = q->head;

    q->head = node->next;
    if (q->head == NULL)
        q->tail = NULL;
    atomic_fetch_sub_explicit(&q->len, 1, memory_order_relaxed);
    node->next = NULL;
    return node;
}

/* Unlinks the whole chain; the lock is held. */
static pp_qnode *
unlink_all(pp_queue *q)
{
    pp_qnode *chain = q->head;

    q->head = q->tail = NULL;
    atomic_store_explicit(&q->len, 0, memory_order_relaxed);
    return chain;
}

/* Claims one of the queue's spinning slots (see pp_queue.h). */
int
pp_queue_claim_spin(pp_queue *q)
{
    if (atomic_fetch_add(&q->spinners, 1) >= q->max_spinners) {
        atomic_fetch_sub(&q->spinners, 1);
        return 0;
    }
    return 1;
}

/* Spins while the queue is empty, for at most spin_ns, in a spinning slot
 * (claimed beforehand, or claimed here). */
static void
spin_for_work(pp_queue *q, long spin_ns, int claimed)
{
    uint64_t deadline;
    unsigned i = 0;

    if (spin_ns <= 0) {
        if (claimed)
            atomic_fetch_sub(&q->spinners, 1);
        return;
    }
    if (!claimed && !pp_queue_claim_spin(q))
        return;
    deadline = pp_now_ns() + (uint64_t)spin_ns;
    while (atomic_load_explicit(&q->len, memory_order_acquire) == 0 &&
           !atomic_load_explicit(&q->closed, memory_order_relaxed)) {
        pp_cpu_relax();
        /* Reading the clock costs ~20 ns; look at it every 64 turns. */
        if ((++i & 63) == 0 && pp_now_ns() >= deadline)
            break;
    }
    atomic_fetch_sub(&q->spinners, 1);
}

/* Blocks until the queue is non-empty or closed; the lock is held. */
static void
wait_for_work(pp_queue *q)
{
    while (q->head == NULL && !atomic_load(&q->closed)) {
        q->sleepers++;
        pthread_cond_wait(&q->cv, &q->mu);
        q->sleepers--;
    }
}

pp_qnode *
pp_queue_pop(pp_queue *q, long spin_ns)
{
    return pp_queue_pop_claimed(q, spin_ns, 0);
}

pp_qnode *
pp_queue_pop_claimed(pp_queue *q, long spin_ns, int claimed)
{
    pp_qnode *node = NULL;
    int wake;

    spin_for_work(q, spin_ns, claimed);
    pthread_mutex_lock(&q->mu);
    wait_for_work(q);
    if (q->head)
        node = unlink_head(q);
    /* Work left behind and a consumer asleep: pass the wake-up on. */
    wake = q->head != NULL && q->sleepers > 0;
    pthread_mutex_unlock(&q->mu);
    if (wake)
        pthread_cond_signal(&q->cv);
    return node;
}

pp_qnode *
pp_queue_trypop(pp_queue *q)
{
    pp_qnode *node = NULL;

    if (atomic_load_explicit(&q->len, memory_order_acquire) == 0)
        return NULL;
    pthread_mutex_lock(&q->mu);
    if (q->head)
        node = unlink_head(q);
    pthread_mutex_unlock(&q->mu);
    return node;
}

pp_qnode *
pp_queue_pop_all(pp_queue *q, long spin_ns)
{
    pp_qnode *chain;

    spin_for_work(q, spin_ns, 0);
    pthread_mutex_lock(&q->mu);
    wait_for_work(q);
    chain = unlink_all(q);
    pthread_mutex_unlock(&q->mu);
    return chain;
}

pp_qnode *
pp_queue_take_all(pp_queue *q)
{
    pp_qnode *chain;

    if (atomic_load_explicit(&q->len, memory_order_acquire) == 0)
        return NULL;
    pthread_mutex_lock(&q->mu);
    chain = unlink_all(q);
    pthread_mutex_unlock(&q->mu);
    return chain;
}

void
pp_queue_close(pp_queue *q)
{
    pthread_mutex_lock(&q->mu);
    atomic_store(&q->closed, 1);
    pthread_mutex_unlock(&q->mu);
    pthread_cond_broadcast(&q->cv);
}
