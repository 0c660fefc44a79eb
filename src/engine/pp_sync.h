/* pp_sync.h -- small synchronisation helpers for the engine core.
 *
 * pp_word is the engine's one-shot completion primitive: a 32-bit state that
 * one thread waits on and another changes (a task's state, a call's done
 * flag).  Waiting spins briefly, then sleeps in futex(2).  Setting the word
 * issues a futex wake only when a waiter is actually asleep, so the common
 * case -- nobody waiting, or a waiter still spinning -- costs no system call.
 * No Python here.
 */
#ifndef PP_SYNC_H
#define PP_SYNC_H

#include <stdatomic.h>
#include <stdint.h>

/* Monotonic clock in nanoseconds. */
uint64_t pp_now_ns(void);

/* A pause hint for spin loops. */
static inline void
pp_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Lifetime: a waiter may free the memory holding a word as soon as
 * pp_word_wait() returns a change -- the word in a call's own record,
 * say.  A setter still looks at the word just after the new value shows
 * (to see whether anyone sleeps), so it counts itself in `setters` for the
 * duration, and a waiter that saw a change waits for that count to be 0
 * before it returns.  A thread that sees the change with pp_word_get()
 * instead and then frees the word calls pp_word_quiesce() first. */
typedef struct pp_word {
    atomic_uint value;
    atomic_uint sleepers;    /* threads inside futex(FUTEX_WAIT) on value */
    atomic_uint setters;     /* threads inside pp_word_set/add */
} pp_word;

static inline void
pp_word_init(pp_word *w, uint32_t value)
{
    atomic_init(&w->value, value);
    atomic_init(&w->sleepers, 0);
    atomic_init(&w->setters, 0);
}

/* Waits until no setter is still touching the word (see above). */
void pp_word_quiesce(pp_word *w);

static inline uint32_t
pp_word_get(pp_word *w)
{
    return atomic_load_explicit(&w->value, memory_order_acquire);
}

/* Changes the word from expected to desired.  Returns 1 on success, 0 when
 * the word held something else. */
static inline int
pp_word_cas(pp_word *w, uint32_t expected, uint32_t desired)
{
    return atomic_compare_exchange_strong(&w->value, &expected, desired);
}

/* Stores value and wakes every sleeping waiter. */
void pp_word_set(pp_word *w, uint32_t value);

/* Adds delta to the word and wakes every sleeping waiter.  Returns the
 * new value. */
uint32_t pp_word_add(pp_word *w, int32_t delta);

/* Waits while the word equals expected: spins up to spin_ns, then sleeps
 * until the word changes or timeout_ns has passed (timeout_ns < 0: no
 * limit).  Returns the value last seen; != expected means it changed. */
uint32_t pp_word_wait(pp_word *w, uint32_t expected, long spin_ns,
                      long timeout_ns);

#endif /* PP_SYNC_H */
