/* pp_loop.h -- one event loop per thread: fds, timers, wake-ups.
 *
 * Each worker thread owns one pp_loop and runs it with pp_loop_run().  The
 * loop watches file descriptors (edge-triggered), keeps timers in a min-heap
 * whose earliest deadline bounds the poll, and lets other threads wake it
 * through coalesced "async" handles.  One iteration has four phases:
 *
 *   1. poll     wait for events; the timeout is 0 when calls are pending or
 *               a stop was requested, else the time to the earliest timer;
 *   2. I/O      run the callback of each ready pp_io;
 *   3. timers   run every timer that is due, earliest first;
 *   4. pending  run the calls queued with pp_pending_add(): deferred work
 *               and closing.  Memory of a closed object is freed here,
 *               after every callback of the iteration has run.
 *
 * Handles (pp_io, pp_timer, pp_async, pp_pending) are owned by the caller,
 * usually embedded in a bigger struct (recover it with pp_container_of from
 * pp_queue.h); the loop never allocates one.  A zero-filled handle is
 * inactive.  Each may be stopped, and its memory reused, at any time on the
 * loop's thread -- including from inside a callback that the same iteration
 * would otherwise still deliver to it.
 *
 * Threads: pp_loop_stop() and pp_async_send() may be called from any thread.
 * Everything else belongs to the thread that runs the loop.
 *
 * Errors: functions return 0 (or a count) on success and -errno on failure.
 * No Python here: this file is part of the engine core.
 */
#ifndef PP_LOOP_H
#define PP_LOOP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Events a pp_io may ask for (mask) and be told about (events). */
#define PP_READABLE 1u
#define PP_WRITABLE 2u
/* Reported only, never asked for: an error is pending on the socket (read it
 * with SO_ERROR), or the peer hung up.  Either comes with PP_READABLE and
 * PP_WRITABLE as far as the mask asks for them, so that the next read or
 * write finds out what happened. */
#define PP_ERROR 4u
#define PP_HANGUP 8u
/* Reported with PP_READABLE: the peer has shut its writing side, so a read
 * will reach end-of-file after the data.  Edge-triggered readers need it:
 * data and the FIN that follows may arrive as one edge, and a short read
 * does not prove the socket drained when a FIN is waiting (nginx keeps
 * reading on EPOLLRDHUP for the same reason). */
#define PP_RDHUP 16u

/* Fairness cap: ready events taken from the kernel per poll.  The rest stay
 * queued in the kernel for the next iteration, so a burst on many fds
 * cannot delay timers and pending calls by more than one batch.  libuv
 * settled on 48 for the same trade-off; 64 keeps a batch in a few pages. */
#define PP_LOOP_MAX_EVENTS 64

#define PP_NS_PER_MS 1000000ull

/* ---- intrusive doubly linked list ------------------------------------- */

/* A link embedded in its owner.  A list head is a pp_link whose next and
 * prev point to itself when empty; an unlinked node has next == NULL. */
typedef struct pp_link {
    struct pp_link *next;
    struct pp_link *prev;
} pp_link;

static inline void
pp_link_init_head(pp_link *head)
{
    head->next = head->prev = head;
}

static inline int
pp_link_empty(const pp_link *head)
{
    return head->next == head;
}

static inline int
pp_link_linked(const pp_link *node)
{
    return node->next != NULL;
}

static inline void
pp_link_append(pp_link *head, pp_link *node)
{
    node->prev = head->prev;
    node->next = head;
    head->prev->next = node;
    head->prev = node;
}

static inline void
pp_link_remove(pp_link *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->next = node->prev = NULL;
}

/* ---- the loop --------------------------------------------------------- */

typedef struct pp_loop pp_loop;

typedef struct pp_loop_stats {
    uint64_t iterations;     /* times through the four phases */
    uint64_t events;         /* pp_io callbacks run */
    uint64_t wakeup_writes;  /* eventfd writes by pp_async_send/pp_loop_stop */
    uint64_t wakeups;        /* async callbacks run */
    uint64_t timers_fired;
    uint64_t pending_run;    /* pending calls run */
} pp_loop_stats;

/* Creates a loop; *out is set on success.  Returns 0 or -errno. */
int pp_loop_create(pp_loop **out);

/* The same with a chosen poller: "epoll", "io_uring", or NULL for the
 * default ($PYPARALLEL_LOOP if set, else epoll).  io_uring falls back to
 * epoll when the build lacks liburing or the kernel refuses it (ask
 * pp_loop_backend() which one runs).  -EINVAL for an unknown name. */
int pp_loop_create_backend(pp_loop **out, const char *backend);

/* Frees the loop.  Returns -EBUSY, and frees nothing, while any pp_io,
 * timer, async handle or pending call is still active (or the loop is
 * running): a leak check as much as a safety net. */
int pp_loop_destroy(pp_loop *loop);

/* Runs iterations until pp_loop_stop() is called, then returns 0 (the stop
 * request is consumed, so the loop may be run again).  Returns -errno as
 * soon as a poll fails (a bug, or the kernel refusing: io_uring can run
 * out of memory). */
int pp_loop_run(pp_loop *loop);

/* Runs one iteration, polling at most timeout_ms milliseconds (-1: until an
 * event or the earliest timer, 0: not at all).  Returns 0 or -errno;
 * -EBUSY when called from one of the loop's own callbacks.  When the poll
 * fails the iteration still runs its due timers and pending calls (with no
 * I/O events), so that a loop can be wound down -- connections closed,
 * their on_close run -- after its poller broke. */
int pp_loop_run_once(pp_loop *loop, int timeout_ms);

/* Asks pp_loop_run() to return at the end of its current iteration.  Any
 * thread may call this, also before pp_loop_run() has started. */
void pp_loop_stop(pp_loop *loop);

/* Hooks run around a poll that may block (its timeout is not 0), on the
 * loop's thread: before returns what the thread holds that others may need
 * while it sleeps, after takes it back -- an embedding interpreter's lock,
 * say.  Either may be NULL.  A poll that cannot block runs neither, so a
 * busy loop does not pay for them. */
typedef void (*pp_block_proc)(pp_loop *loop, void *data);
void pp_loop_set_block_hooks(pp_loop *loop, pp_block_proc before,
                             pp_block_proc after, void *data);

/* The monotonic time (pp_now_ns) read after the last poll: what "now" means
 * for the callbacks of this iteration. */
uint64_t pp_loop_now(const pp_loop *loop);

/* The name of the poller this loop runs ("epoll" or "io_uring"). */
const char *pp_loop_backend(const pp_loop *loop);

void pp_loop_get_stats(const pp_loop *loop, pp_loop_stats *out);

/* ---- file descriptors ------------------------------------------------- */

typedef struct pp_io pp_io;

/* events: PP_READABLE / PP_WRITABLE as far as io->mask asks for them, plus
 * PP_ERROR / PP_HANGUP, and PP_RDHUP when PP_READABLE is asked for. */
typedef void (*pp_io_proc)(pp_loop *loop, pp_io *io, unsigned events);

struct pp_io {
    int fd;
    unsigned mask;           /* PP_READABLE | PP_WRITABLE asked for */
    pp_io_proc proc;
    void *data;              /* the owner's; the loop never reads it */
    int registered;          /* private: 1 between register and unregister */
    uint64_t poll_id;        /* private: the io_uring poller's request id */
};

/* Starts watching fd for the events in mask, edge-triggered: the callback
 * runs when fd *becomes* readable or writable, so its owner must read (or
 * write) until EAGAIN, or remember that it stopped early.  The fd must be
 * non-blocking.  Returns 0 or -errno (-EEXIST if io is registered). */
int pp_io_register(pp_loop *loop, pp_io *io, int fd, unsigned mask,
                   pp_io_proc proc, void *data);

/* Changes the mask.  An event already fetched for this iteration is still
 * delivered only for bits in the new mask.  Re-arming reports the fd's
 * current state at once (e.g. adding PP_WRITABLE to a writable socket).
 * Returns 0 or -errno. */
int pp_io_modify(pp_loop *loop, pp_io *io, unsigned mask);

/* Stops watching; the io's memory may be reused as soon as this returns,
 * even inside a callback (events fetched but not yet delivered to it are
 * dropped).  Does not close the fd.  Returns 0 or -errno; the io is
 * unregistered either way. */
int pp_io_unregister(pp_loop *loop, pp_io *io);

/* ---- timers ----------------------------------------------------------- */

typedef struct pp_timer pp_timer;
typedef void (*pp_timer_proc)(pp_loop *loop, pp_timer *timer);

struct pp_timer {
    uint64_t deadline;       /* pp_now_ns() at which it is due */
    uint64_t period;         /* ns between firings; 0: one-shot */
    pp_timer_proc proc;
    void *data;              /* the owner's */
    uint64_t seq;            /* private: start order, breaks deadline ties */
    size_t heap_pos;         /* private: index in the heap + 1; 0: inactive */
};

/* Starts (or restarts) a timer that fires delay_ns from now and then, if
 * period_ns > 0, every period_ns.  Timers fire in deadline order, and
 * timers with the same deadline in the order they were started.  A periodic
 * timer that falls behind skips the missed beats rather than firing in a
 * burst.  A timer started from a timer callback never fires in the same
 * phase, so a zero-delay timer that restarts itself cannot starve I/O.
 * Deadlines saturate: a delay (or period) too big to add to the clock
 * means a deadline of UINT64_MAX, never reached, rather than one that
 * wraps round into the past.  Returns 0 or -ENOMEM. */
int pp_timer_start(pp_loop *loop, pp_timer *timer, uint64_t delay_ns,
                   uint64_t period_ns, pp_timer_proc proc, void *data);

/* The same with an absolute deadline (a pp_now_ns() value; one in the past
 * is due at once): timers given the very same deadline fire in the order
 * they were started. */
int pp_timer_start_at(pp_loop *loop, pp_timer *timer, uint64_t deadline,
                      uint64_t period_ns, pp_timer_proc proc, void *data);

/* Cancels the timer if it is active; its memory may be reused at once, also
 * from its own callback or from another timer's callback in the same
 * phase (it then does not fire). */
void pp_timer_stop(pp_loop *loop, pp_timer *timer);

static inline int
pp_timer_active(const pp_timer *timer)
{
    return timer->heap_pos != 0;
}

/* ---- cross-thread wake-ups -------------------------------------------- */

typedef struct pp_async pp_async;
typedef void (*pp_async_proc)(pp_loop *loop, pp_async *async);

struct pp_async {
    atomic_int pending;      /* private: 1 between send and callback */
    pp_async_proc proc;
    void *data;              /* the owner's */
    pp_loop *loop;
    pp_link link;            /* private: in the loop's async list */
};

/* Starts an async handle: pp_async_send() from any thread makes proc run
 * once on the loop's thread.  Returns 0. */
int pp_async_start(pp_loop *loop, pp_async *async, pp_async_proc proc,
                   void *data);

/* Requests a call of the handle's proc.  Any thread.  Sends coalesce: many
 * sends before the loop gets round to it produce one call, and only the
 * first of them writes the loop's eventfd (libuv's uv_async_send).  Work
 * published before a send is visible to the callback that follows it. */
void pp_async_send(pp_async *async);

/* Stops the handle; a send still pending is dropped.  No thread may call
 * pp_async_send() on it any more: stopping it is the owner's proof of
 * that. */
void pp_async_stop(pp_loop *loop, pp_async *async);

/* ---- pending calls ----------------------------------------------------- */

typedef struct pp_pending pp_pending;
typedef void (*pp_pending_proc)(pp_loop *loop, pp_pending *pending);

struct pp_pending {
    pp_link link;            /* private: queued iff link.next != NULL */
    pp_pending_proc proc;
    void *data;              /* the owner's */
};

/* Queues proc to run once in this iteration's pending phase (or the next
 * iteration's, when called from a pending call).  Queueing a call that is
 * already queued does nothing.  The poll does not block while calls are
 * queued. */
void pp_pending_add(pp_loop *loop, pp_pending *pending, pp_pending_proc proc);

/* Unqueues it, if queued; its memory may then be reused. */
void pp_pending_cancel(pp_loop *loop, pp_pending *pending);

static inline int
pp_pending_queued(const pp_pending *pending)
{
    return pp_link_linked(&pending->link);
}

#endif /* PP_LOOP_H */
