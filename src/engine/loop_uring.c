/* loop_uring.c -- the io_uring poller, included by loop.c when liburing is
 * available (PP_HAVE_URING), chosen per loop at run time.
 *
 * Readiness, not completion: each pp_io is one multishot IORING_OP_POLL_ADD
 * request, edge-triggered like the epoll poller (a multishot poll reports
 * transitions unless asked for IORING_POLL_ADD_LEVEL), so the connection
 * code above is the same for both.  What io_uring buys is batching: adding,
 * changing and removing polls are SQEs that go to the kernel with the next
 * wait, one io_uring_enter(2) for all of them, where epoll needs one
 * epoll_ctl(2) each.
 *
 * A request's user_data names a slot in a table plus the slot's generation,
 * never a pointer: completions of a poll that was removed may still be in
 * the ring after its pp_io has been freed, and the generation check drops
 * them.  A multishot poll the kernel ends (no IORING_CQE_F_MORE) is armed
 * again while its pp_io is still registered.
 */
#include <liburing.h>
#include <poll.h>

#define URING_ENTRIES 256

typedef struct uring_slot {
    pp_io *io;               /* NULL: free */
    uint32_t gen;
    uint32_t next_free;      /* index + 1 of the next free slot; 0: none */
} uring_slot;

struct pp_uring {
    struct io_uring ring;
    uring_slot *slots;
    uint32_t nslots;
    uint32_t cap;
    uint32_t free_head;      /* index + 1; 0: none */
};

static int
ur_create(pp_loop *loop)
{
    struct pp_uring *u = calloc(1, sizeof(*u));
    int rc;

    if (u == NULL)
        return -ENOMEM;
    if ((rc = io_uring_queue_init(URING_ENTRIES, &u->ring, 0)) < 0) {
        free(u);
        return rc;
    }
    loop->poller = u;
    return 0;
}

static void
ur_free(pp_loop *loop)
{
    struct pp_uring *u = loop->poller;

    io_uring_queue_exit(&u->ring);
    free(u->slots);
    free(u);
    loop->poller = NULL;
}

/* An SQE, submitting what is queued when the ring is full. */
static struct io_uring_sqe *
ur_sqe(struct pp_uring *u)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);

    if (sqe == NULL) {
        (void)io_uring_submit(&u->ring);
        sqe = io_uring_get_sqe(&u->ring);
    }
    return sqe;
}

static unsigned
ur_poll_mask(unsigned mask)
{
    unsigned ev = 0;

    if (mask & PP_READABLE)
        ev |= POLLIN | POLLRDHUP;
    if (mask & PP_WRITABLE)
        ev |= POLLOUT;
    return ev;
}

static int
ur_arm(struct pp_uring *u, pp_io *io, unsigned mask)
{
    struct io_uring_sqe *sqe = ur_sqe(u);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_poll_multishot(sqe, io->fd, ur_poll_mask(mask));
    io_uring_sqe_set_data64(sqe, io->poll_id);
    return 0;
}

static int
ur_add(pp_loop *loop, pp_io *io, unsigned mask)
{
    struct pp_uring *u = loop->poller;
    uint32_t i;
    int rc;

    if (u->free_head) {
        i = u->free_head - 1;
        u->free_head = u->slots[i].next_free;
    } else {
        if (u->nslots == u->cap) {
            uint32_t cap = u->cap ? u->cap * 2 : 64;
            uring_slot *s = realloc(u->slots, cap * sizeof(*s));
            if (s == NULL)
                return -ENOMEM;
            u->slots = s;
            u->cap = cap;
        }
        i = u->nslots++;
        u->slots[i].gen = 0;
    }
    u->slots[i].io = io;
    u->slots[i].gen++;
    u->slots[i].next_free = 0;
    io->poll_id = ((uint64_t)u->slots[i].gen << 32) | (uint64_t)(i + 1);
    if ((rc = ur_arm(u, io, mask)) < 0) {
        u->slots[i].io = NULL;
        u->slots[i].next_free = u->free_head;
        u->free_head = i + 1;
    }
    return rc;
}

static int
ur_del(pp_loop *loop, pp_io *io)
{
    struct pp_uring *u = loop->poller;
    uint32_t i = (uint32_t)(io->poll_id & 0xffffffffu) - 1;
    struct io_uring_sqe *sqe;

    if (i >= u->nslots || u->slots[i].io != io)
        return -ENOENT;
    u->slots[i].io = NULL;
    u->slots[i].gen++;           /* late completions no longer match */
    u->slots[i].next_free = u->free_head;
    u->free_head = i + 1;
    if ((sqe = ur_sqe(u)) == NULL)
        return -EBUSY;
    io_uring_prep_poll_remove(sqe, io->poll_id);
    io_uring_sqe_set_data64(sqe, 0);
    return 0;
}

static int
ur_mod(pp_loop *loop, pp_io *io, unsigned mask)
{
    int rc = ur_del(loop, io);

    return rc < 0 ? rc : ur_add(loop, io, mask);
}

static int
ur_wait(pp_loop *loop, int timeout_ms)
{
    struct pp_uring *u = loop->poller;
    struct io_uring_cqe *cqes[PP_LOOP_MAX_EVENTS], *cqe;
    struct __kernel_timespec ts;
    unsigned i, n;
    int rc, nfired = 0;

    if (timeout_ms == 0) {
        rc = io_uring_submit(&u->ring);
    } else if (timeout_ms < 0) {
        rc = io_uring_submit_and_wait(&u->ring, 1);
    } else {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
        rc = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
    }
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
        return rc;
    n = io_uring_peek_batch_cqe(&u->ring, cqes, PP_LOOP_MAX_EVENTS);
    for (i = 0; i < n; i++) {
        uint64_t ud = io_uring_cqe_get_data64(cqes[i]);
        uint32_t slot = (uint32_t)(ud & 0xffffffffu), gen = (uint32_t)(ud >> 32);
        int res = cqes[i]->res;
        unsigned ev = 0;
        pp_io *io;

        if (slot == 0 || slot > u->nslots || u->slots[slot - 1].gen != gen ||
            (io = u->slots[slot - 1].io) == NULL)
            continue;            /* a removal's own completion, or stale */
        if (!(cqes[i]->flags & IORING_CQE_F_MORE)) {
            /* The kernel ended this multishot poll: arm it again. */
            if (ur_arm(u, io, io->mask) < 0)
                res = -EBUSY;
        }
        if (res < 0) {
            if (res == -ECANCELED)
                continue;
            ev = PP_ERROR | PP_READABLE | PP_WRITABLE;
        } else {
            if (res & POLLIN)
                ev |= PP_READABLE;
            if (res & POLLOUT)
                ev |= PP_WRITABLE;
            if (res & POLLERR)
                ev |= PP_ERROR | PP_READABLE | PP_WRITABLE;
            if (res & POLLHUP)
                ev |= PP_HANGUP | PP_READABLE | PP_WRITABLE;
            if (res & POLLRDHUP)
                ev |= PP_RDHUP | PP_READABLE;
        }
        ev &= io->mask | PP_ERROR | PP_HANGUP | PP_RDHUP;
        if (ev == 0)
            continue;
        loop->fired[nfired].io = io;
        loop->fired[nfired].events = ev;
        nfired++;
    }
    io_uring_cq_advance(&u->ring, n);
    return nfired;
}

static const pp_poller_ops uring_ops = {
    "io_uring", ur_create, ur_free, ur_add, ur_mod, ur_del, ur_wait,
};
