/* pp_queue.h -- an intrusive, blocking FIFO shared by many threads.
 *
 * The engine's work queue: producers push caller-owned nodes (embedded in
 * the caller's own struct, so pushing never allocates), consumers pop them,
 * spinning briefly before they sleep so that a steady stream of small tasks
 * never pays for a futex wake-up.  Closing the queue wakes every sleeper;
 * pop then drains what is left and returns NULL once the queue is empty.
 *
 * No Python here: this file is part of the engine core.
 */
#ifndef PP_QUEUE_H
#define PP_QUEUE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

/* A link embedded in the owner's struct; recover the owner with
 * pp_container_of(node, type, field). */
typedef struct pp_qnode {
    struct pp_qnode *next;
} pp_qnode;

#define pp_container_of(ptr, type, field) \
    ((type *)((char *)(ptr) - offsetof(type, field)))

typedef struct pp_queue {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pp_qnode *head;          /* oldest node, or NULL */
    pp_qnode *tail;          /* newest node, or NULL */
    atomic_size_t len;       /* readable without the lock, for spinning */
    int sleepers;            /* consumers blocked in pthread_cond_wait */
    atomic_int closed;       /* set once by pp_queue_close */
    atomic_int spinners;     /* consumers spinning right now */
    int max_spinners;        /* more than this sleep at once instead */
} pp_queue;

/* Returns 0, or a positive errno value from pthreads. */
int pp_queue_init(pp_queue *q);
/* At most n consumers spin at a time; the others go straight to sleep.
 * Spinning saves the wake-up of a sleeping thread (tens of microseconds on
 * a virtual machine whose idle CPUs halt), but a spinner occupies a CPU that
 * a producer may need: keep n below the number of CPUs.  Default: no
 * limit. */
void pp_queue_set_max_spinners(pp_queue *q, int n);

/* The queue must be empty of waiters; nodes still queued are not touched. */
void pp_queue_destroy(pp_queue *q);

/* Appends one node; wakes one sleeping consumer if there is one.
 * Returns 0, or -1 (nothing queued) once the queue is closed. */
int pp_queue_push(pp_queue *q, pp_qnode *node);

/* Like pp_queue_push, but wakes a sleeping consumer only once the queue
 * holds at least batch nodes: for work nobody waits on right now, whose
 * consumer may as well take it in one go later. */
int pp_queue_push_lazy(pp_queue *q, pp_qnode *node, size_t batch);

/* Removes the oldest node.  Spins up to spin_ns nanoseconds while the queue
 * is empty, then sleeps.  Returns NULL only when the queue is closed and
 * empty. */
pp_qnode *pp_queue_pop(pp_queue *q, long spin_ns);

/* Claims one of the spinning slots ahead of the next pop.  A consumer that
 * is about to publish a result, and then come back for more, claims first:
 * a producer reacting to that result then sees a spinner coming and does not
 * pay for waking a sleeper.  Returns 1 when a slot was claimed, 0 when all
 * are taken. */
int pp_queue_claim_spin(pp_queue *q);

/* pp_queue_pop for a consumer that may hold a claimed spinning slot
 * (claimed = what pp_queue_claim_spin returned); the slot is released. */
pp_qnode *pp_queue_pop_claimed(pp_queue *q, long spin_ns, int claimed);

/* Removes the oldest node without blocking; NULL when empty. */
pp_qnode *pp_queue_trypop(pp_queue *q);

/* Removes every queued node at once, blocking (spin, then sleep) until there
 * is at least one.  Returns the chain oldest first, linked through ->next,
 * or NULL when the queue is closed and empty. */
pp_qnode *pp_queue_pop_all(pp_queue *q, long spin_ns);

/* Removes every queued node without blocking; NULL when empty. */
pp_qnode *pp_queue_take_all(pp_queue *q);

/* Refuses further pushes and wakes every consumer. */
void pp_queue_close(pp_queue *q);

static inline size_t
pp_queue_len(pp_queue *q)
{
    return atomic_load_explicit(&q->len, memory_order_relaxed);
}

#endif /* PP_QUEUE_H */
