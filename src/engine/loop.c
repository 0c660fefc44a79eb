/* loop.c -- see pp_loop.h.
 *
 * Pollers are included textually, the way Redis's ae.c includes
 * ae_epoll.c: each defines its own state and a pp_poller_ops table.  epoll
 * is always there; io_uring (loop_uring.c, built when liburing is present)
 * is chosen per loop at run time and falls back to epoll where the kernel
 * refuses it.
 *
 * Timers live in a binary min-heap of pointers ordered by (deadline, seq);
 * each timer remembers its slot, so stopping one is O(log n).  The poll's
 * timeout comes from the heap's top, rounded up to whole milliseconds so a
 * timer is never polled for early (it may fire up to 1 ms late).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "pp_loop.h"
#include "pp_sync.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct pp_poller_ops pp_poller_ops;

typedef struct fired_event {
    pp_io *io;               /* NULL once unregistered during dispatch */
    unsigned events;
} fired_event;

struct pp_loop {
    void *poller;
    const pp_poller_ops *ops;

    /* I/O phase.  fired[cur + 1 .. nfired) is what dispatch has still to
     * deliver; pp_io_unregister() clears matching entries there. */
    fired_event fired[PP_LOOP_MAX_EVENTS];
    int nfired;
    int cur;
    size_t nio;              /* registered pp_io, the wake-up's excluded */

    /* Timers. */
    pp_timer **heap;
    size_t nheap;
    size_t heap_cap;
    uint64_t timer_seq;      /* next start order number */

    /* Cross-thread wake-ups. */
    int wake_fd;             /* eventfd */
    pp_io wake_io;
    atomic_int wake_pending; /* 1 between the eventfd write and its read */
    atomic_int stop;
    pp_link asyncs;
    pp_link *async_cursor;   /* next async to look at while draining */
    size_t nasync;

    pp_link pending;

    pp_block_proc before_block, after_block;
    void *block_data;

    int running;             /* inside pp_loop_run_once */
    uint64_t now;
    pp_loop_stats stats;
    atomic_ullong wakeup_writes;
};

/* A poller's hooks.  wait fills loop->fired and returns how many events,
 * 0 when interrupted, or -errno. */
struct pp_poller_ops {
    const char *name;
    int (*create)(pp_loop *loop);
    void (*free)(pp_loop *loop);
    int (*add)(pp_loop *loop, pp_io *io, unsigned mask);
    int (*mod)(pp_loop *loop, pp_io *io, unsigned mask);
    int (*del)(pp_loop *loop, pp_io *io);
    int (*wait)(pp_loop *loop, int timeout_ms);
};

#include "loop_epoll.c"
#ifdef PP_HAVE_URING
#include "loop_uring.c"
#endif

/* ---- timer heap -------------------------------------------------------- */

static int
timer_before(const pp_timer *a, const pp_timer *b)
{
    return a->deadline < b->deadline ||
           (a->deadline == b->deadline && a->seq < b->seq);
}

static void
heap_set(pp_loop *loop, size_t i, pp_timer *t)
{
    loop->heap[i] = t;
    t->heap_pos = i + 1;
}

static void
heap_up(pp_loop *loop, size_t i)
{
    pp_timer *t = loop->heap[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (!timer_before(t, loop->heap[parent]))
            break;
        heap_set(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_set(loop, i, t);
}

static void
heap_down(pp_loop *loop, size_t i)
{
    pp_timer *t = loop->heap[i];
    size_t n = loop->nheap;

    for (;;) {
        size_t child = 2 * i + 1;

        if (child >= n)
            break;
        if (child + 1 < n && timer_before(loop->heap[child + 1],
                                          loop->heap[child]))
            child++;
        if (!timer_before(loop->heap[child], t))
            break;
        heap_set(loop, i, loop->heap[child]);
        i = child;
    }
    heap_set(loop, i, t);
}

/* The caller has made room. */
static void
heap_insert(pp_loop *loop, pp_timer *t)
{
    t->seq = loop->timer_seq++;
    loop->heap[loop->nheap++] = t;
    heap_up(loop, loop->nheap - 1);
}

static void
heap_remove(pp_loop *loop, pp_timer *t)
{
    size_t i = t->heap_pos - 1;
    pp_timer *last = loop->heap[--loop->nheap];

    t->heap_pos = 0;
    if (last == t)
        return;
    heap_set(loop, i, last);
    if (i > 0 && timer_before(last, loop->heap[(i - 1) / 2]))
        heap_up(loop, i);
    else
        heap_down(loop, i);
}

/* a + b, or UINT64_MAX where that overflows: a deadline that far off is
 * never reached, where a wrapped one would be due at once. */
static uint64_t
add_saturating(uint64_t a, uint64_t b)
{
    return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

int
pp_timer_start(pp_loop *loop, pp_timer *timer, uint64_t delay_ns,
               uint64_t period_ns, pp_timer_proc proc, void *data)
{
    return pp_timer_start_at(loop, timer, add_saturating(pp_now_ns(), delay_ns),
                             period_ns, proc, data);
}

int
pp_timer_start_at(pp_loop *loop, pp_timer *timer, uint64_t deadline,
                  uint64_t period_ns, pp_timer_proc proc, void *data)
{
    if (timer->heap_pos)
        heap_remove(loop, timer);
    if (loop->nheap == loop->heap_cap) {
        size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 16;
        pp_timer **heap = realloc(loop->heap, cap * sizeof(*heap));

        if (heap == NULL)
            return -ENOMEM;
        loop->heap = heap;
        loop->heap_cap = cap;
    }
    timer->deadline = deadline;
    timer->period = period_ns;
    timer->proc = proc;
    timer->data = data;
    heap_insert(loop, timer);
    return 0;
}

void
pp_timer_stop(pp_loop *loop, pp_timer *timer)
{
    if (timer->heap_pos)
        heap_remove(loop, timer);
}

/* Runs every timer due now.  The phase ends at the first timer started
 * after it began (seq >= limit): such a timer sorts after every older one
 * with the same deadline, so nothing due is skipped, and a callback that
 * restarts a timer with no delay cannot keep the phase going forever. */
static void
run_timers(pp_loop *loop)
{
    uint64_t now = loop->now, limit = loop->timer_seq;

    while (loop->nheap > 0) {
        pp_timer *t = loop->heap[0];

        if (t->deadline > now || t->seq >= limit)
            break;
        heap_remove(loop, t);
        if (t->period) {
            /* Re-armed before the call, so the callback may stop it. */
            t->deadline = add_saturating(t->deadline, t->period);
            if (t->deadline <= now)
                t->deadline = add_saturating(now, t->period);
            heap_insert(loop, t);  /* cannot fail: a slot was just freed */
        }
        loop->stats.timers_fired++;
        t->proc(loop, t);          /* t may be gone after this */
    }
}

/* ---- file descriptors ------------------------------------------------- */

int
pp_io_register(pp_loop *loop, pp_io *io, int fd, unsigned mask,
               pp_io_proc proc, void *data)
{
    int rc;

    if (io->registered)
        return -EEXIST;
    io->fd = fd;
    io->mask = mask & (PP_READABLE | PP_WRITABLE);
    io->proc = proc;
    io->data = data;
    if ((rc = loop->ops->add(loop, io, io->mask)) < 0)
        return rc;
    io->registered = 1;
    if (io != &loop->wake_io)
        loop->nio++;
    return 0;
}

int
pp_io_modify(pp_loop *loop, pp_io *io, unsigned mask)
{
    int rc;

    if (!io->registered)
        return -ENOENT;
    mask &= PP_READABLE | PP_WRITABLE;
    if ((rc = loop->ops->mod(loop, io, mask)) < 0)
        return rc;
    io->mask = mask;
    return 0;
}

int
pp_io_unregister(pp_loop *loop, pp_io *io)
{
    int i, rc;

    if (!io->registered)
        return 0;
    io->registered = 0;
    if (io != &loop->wake_io)
        loop->nio--;
    /* Events already fetched for io must not reach it: its owner may free
     * it as soon as we return. */
    for (i = loop->cur + 1; i < loop->nfired; i++) {
        if (loop->fired[i].io == io)
            loop->fired[i].io = NULL;
    }
    rc = loop->ops->del(loop, io);
    /* EBADF/ENOENT: the fd was closed first, which dropped it from the
     * poller already.  Nothing is left registered either way. */
    return rc == -EBADF || rc == -ENOENT ? 0 : rc;
}

/* Delivers the events fetched by the last poll.  Redis re-tests the mask
 * before each call for the same reason as the checks here: a callback may
 * change or drop any watcher, its own included. */
static void
dispatch(pp_loop *loop, int n)
{
    loop->nfired = n;
    for (loop->cur = 0; loop->cur < n; loop->cur++) {
        fired_event *f = &loop->fired[loop->cur];
        unsigned ev;

        if (f->io == NULL)
            continue;
        ev = f->events & (f->io->mask | PP_ERROR | PP_HANGUP | PP_RDHUP);
        if (ev == 0)
            continue;
        if (f->io != &loop->wake_io)
            loop->stats.events++;
        f->io->proc(loop, f->io, ev);
    }
    loop->nfired = 0;
    loop->cur = -1;
}

/* ---- cross-thread wake-ups -------------------------------------------- */

/* Any thread.  Writes the eventfd only when no write is outstanding. */
static void
wake(pp_loop *loop)
{
    uint64_t one = 1;

    if (atomic_exchange(&loop->wake_pending, 1) != 0)
        return;
    atomic_fetch_add_explicit(&loop->wakeup_writes, 1, memory_order_relaxed);
    while (write(loop->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
    /* EAGAIN would mean the counter is near 2^64: the loop is awake
     * anyway. */
}

int
pp_async_start(pp_loop *loop, pp_async *async, pp_async_proc proc,
               void *data)
{
    atomic_init(&async->pending, 0);
    async->proc = proc;
    async->data = data;
    async->loop = loop;
    pp_link_append(&loop->asyncs, &async->link);
    loop->nasync++;
    return 0;
}

void
pp_async_send(pp_async *async)
{
    /* The exchanges are sequentially consistent: the drain below clears
     * wake_pending before it tests each handle, so a sender either sees
     * wake_pending == 0 and writes, or its handle is tested after. */
    if (atomic_exchange(&async->pending, 1) == 0)
        wake(async->loop);
}

void
pp_async_stop(pp_loop *loop, pp_async *async)
{
    if (!pp_link_linked(&async->link))
        return;
    if (loop->async_cursor == &async->link)
        loop->async_cursor = async->link.next;
    pp_link_remove(&async->link);
    loop->nasync--;
}

static void
on_wake(pp_loop *loop, pp_io *io, unsigned events)
{
    uint64_t count;
    pp_link *l;

    (void)io;
    (void)events;
    while (read(loop->wake_fd, &count, sizeof(count)) < 0 && errno == EINTR)
        ;
    /* From here on a new send writes the eventfd again. */
    atomic_store(&loop->wake_pending, 0);
    /* The cursor lets a callback stop any async, the next one included. */
    for (l = loop->asyncs.next; l != &loop->asyncs; l = loop->async_cursor) {
        pp_async *a = (pp_async *)((char *)l - offsetof(pp_async, link));

        loop->async_cursor = l->next;
        if (atomic_exchange(&a->pending, 0)) {
            loop->stats.wakeups++;
            a->proc(loop, a);
        }
    }
    loop->async_cursor = NULL;
}

/* ---- pending calls ----------------------------------------------------- */

void
pp_pending_add(pp_loop *loop, pp_pending *pending, pp_pending_proc proc)
{
    pending->proc = proc;
    if (!pp_link_linked(&pending->link))
        pp_link_append(&loop->pending, &pending->link);
}

void
pp_pending_cancel(pp_loop *loop, pp_pending *pending)
{
    (void)loop;
    if (pp_link_linked(&pending->link))
        pp_link_remove(&pending->link);
}

/* Runs the calls queued so far; calls queued meanwhile wait for the next
 * iteration (whose poll will not block).  The batch is moved to a list on
 * the stack, so pp_pending_cancel() works on it as on the loop's own. */
static void
run_pending(pp_loop *loop)
{
    pp_link batch;

    if (pp_link_empty(&loop->pending))
        return;
    batch.next = loop->pending.next;
    batch.prev = loop->pending.prev;
    batch.next->prev = &batch;
    batch.prev->next = &batch;
    pp_link_init_head(&loop->pending);
    while (!pp_link_empty(&batch)) {
        pp_link *l = batch.next;
        pp_pending *p = (pp_pending *)((char *)l - offsetof(pp_pending, link));

        pp_link_remove(l);
        loop->stats.pending_run++;
        p->proc(loop, p);
    }
}

/* ---- the loop --------------------------------------------------------- */

/* The poller for a backend name (NULL or "": $PYPARALLEL_LOOP, else
 * epoll).  Returns NULL for an unknown name. */
static const pp_poller_ops *
choose_poller(const char *backend)
{
    if (backend == NULL || *backend == '\0')
        backend = getenv("PYPARALLEL_LOOP");
    if (backend == NULL || *backend == '\0' || strcmp(backend, "epoll") == 0)
        return &epoll_ops;
    if (strcmp(backend, "io_uring") == 0) {
#ifdef PP_HAVE_URING
        return &uring_ops;
#else
        return &epoll_ops;   /* built without liburing: epoll it is */
#endif
    }
    return NULL;
}

int
pp_loop_create(pp_loop **out)
{
    return pp_loop_create_backend(out, NULL);
}

int
pp_loop_create_backend(pp_loop **out, const char *backend)
{
    const pp_poller_ops *ops = choose_poller(backend);
    pp_loop *loop;
    int rc;

    if (ops == NULL)
        return -EINVAL;
    if ((loop = calloc(1, sizeof(*loop))) == NULL)
        return -ENOMEM;
    loop->ops = ops;

    if (loop == NULL)
        return -ENOMEM;
    loop->cur = -1;
    loop->wake_fd = -1;
    atomic_init(&loop->wake_pending, 0);
    atomic_init(&loop->stop, 0);
    atomic_init(&loop->wakeup_writes, 0);
    pp_link_init_head(&loop->asyncs);
    pp_link_init_head(&loop->pending);
    if ((rc = loop->ops->create(loop)) < 0 && loop->ops != &epoll_ops) {
        /* The kernel refuses io_uring (disabled, or filtered): epoll. */
        loop->ops = &epoll_ops;
        rc = loop->ops->create(loop);
    }
    if (rc < 0)
        goto err;
    loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wake_fd < 0) {
        rc = -errno;
        goto err;
    }
    rc = pp_io_register(loop, &loop->wake_io, loop->wake_fd, PP_READABLE,
                        on_wake, NULL);
    if (rc < 0)
        goto err;
    loop->now = pp_now_ns();
    *out = loop;
    return 0;

err:
    if (loop->wake_fd >= 0)
        close(loop->wake_fd);
    if (loop->poller)
        loop->ops->free(loop);
    free(loop);
    return rc;
}

int
pp_loop_destroy(pp_loop *loop)
{
    if (loop->running || loop->nio || loop->nheap || loop->nasync ||
        !pp_link_empty(&loop->pending))
        return -EBUSY;
    (void)pp_io_unregister(loop, &loop->wake_io);
    close(loop->wake_fd);
    loop->ops->free(loop);
    free(loop->heap);
    free(loop);
    return 0;
}

/* The poll timeout for this iteration, in ms: at most the caller's. */
static int
poll_timeout(pp_loop *loop, int timeout_ms)
{
    uint64_t now, wait_ns, ms;

    if (!pp_link_empty(&loop->pending) || atomic_load(&loop->stop))
        return 0;
    if (loop->nheap == 0 || timeout_ms == 0)
        return timeout_ms;
    now = pp_now_ns();
    if (loop->heap[0]->deadline <= now)
        return 0;
    wait_ns = loop->heap[0]->deadline - now;
    ms = (wait_ns + PP_NS_PER_MS - 1) / PP_NS_PER_MS;
    if (ms > INT_MAX)
        ms = INT_MAX;
    if (timeout_ms < 0 || ms < (uint64_t)timeout_ms)
        return (int)ms;
    return timeout_ms;
}

int
pp_loop_run_once(pp_loop *loop, int timeout_ms)
{
    int n, timeout;

    /* A nested run would overwrite the batch being dispatched. */
    if (loop->running)
        return -EBUSY;
    timeout = poll_timeout(loop, timeout_ms);
    if (timeout != 0 && loop->before_block)
        loop->before_block(loop, loop->block_data);
    n = loop->ops->wait(loop, timeout);
    if (timeout != 0 && loop->after_block)
        loop->after_block(loop, loop->block_data);
    /* A failed poll delivers no events, but due timers and pending calls
     * still run: closing goes through the pending phase, so a loop whose
     * poller broke can still be wound down. */
    loop->running = 1;
    loop->now = pp_now_ns();
    dispatch(loop, n < 0 ? 0 : n);
    loop->now = pp_now_ns();
    run_timers(loop);
    run_pending(loop);
    loop->running = 0;
    loop->stats.iterations++;
    return n < 0 ? n : 0;
}

int
pp_loop_run(pp_loop *loop)
{
    int rc;

    while (!atomic_exchange(&loop->stop, 0)) {
        if ((rc = pp_loop_run_once(loop, -1)) < 0)
            return rc;
    }
    return 0;
}

void
pp_loop_set_block_hooks(pp_loop *loop, pp_block_proc before,
                        pp_block_proc after, void *data)
{
    loop->before_block = before;
    loop->after_block = after;
    loop->block_data = data;
}

void
pp_loop_stop(pp_loop *loop)
{
    atomic_store(&loop->stop, 1);
    wake(loop);
}

uint64_t
pp_loop_now(const pp_loop *loop)
{
    return loop->now;
}

const char *
pp_loop_backend(const pp_loop *loop)
{
    return loop->ops->name;
}

void
pp_loop_get_stats(const pp_loop *loop, pp_loop_stats *out)
{
    *out = loop->stats;
    out->wakeup_writes = atomic_load_explicit(
        (atomic_ullong *)&loop->wakeup_writes, memory_order_relaxed);
}
