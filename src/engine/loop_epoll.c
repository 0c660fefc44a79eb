/* loop_epoll.c -- the epoll poller, included by loop.c (not compiled alone).
 *
 * A poller defines its state struct and a pp_poller_ops table (create,
 * free, add, mod, del, wait); the rest of the loop knows nothing about
 * epoll.  Every fd is added
 * edge-triggered with the pp_io itself in data.ptr, so there is no
 * fd-indexed table to size or grow.
 */
#include <sys/epoll.h>

struct pp_epoll {
    int epfd;
    struct epoll_event events[PP_LOOP_MAX_EVENTS];
};

static int
ep_create(pp_loop *loop)
{
    struct pp_epoll *p = malloc(sizeof(*p));

    if (p == NULL)
        return -ENOMEM;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) {
        int rc = -errno;

        free(p);
        return rc;
    }
    loop->poller = p;
    return 0;
}

static void
ep_free(pp_loop *loop)
{
    close(((struct pp_epoll *)loop->poller)->epfd);
    free(loop->poller);
    loop->poller = NULL;
}

static uint32_t
epoll_mask(unsigned mask)
{
    uint32_t ev = EPOLLET;

    if (mask & PP_READABLE)
        ev |= EPOLLIN | EPOLLRDHUP;
    if (mask & PP_WRITABLE)
        ev |= EPOLLOUT;
    return ev;
}

static int
ep_ctl(pp_loop *loop, int op, pp_io *io, unsigned mask)
{
    struct epoll_event ev;

    ev.events = epoll_mask(mask);
    ev.data.ptr = io;
    return epoll_ctl(((struct pp_epoll *)loop->poller)->epfd, op, io->fd, &ev) == 0 ? 0 : -errno;
}

static int
ep_add(pp_loop *loop, pp_io *io, unsigned mask)
{
    return ep_ctl(loop, EPOLL_CTL_ADD, io, mask);
}

static int
ep_mod(pp_loop *loop, pp_io *io, unsigned mask)
{
    return ep_ctl(loop, EPOLL_CTL_MOD, io, mask);
}

static int
ep_del(pp_loop *loop, pp_io *io)
{
    struct epoll_event ev = {0};  /* kernels before 2.6.9 wanted non-NULL */

    return epoll_ctl(((struct pp_epoll *)loop->poller)->epfd, EPOLL_CTL_DEL, io->fd, &ev) == 0
               ? 0 : -errno;
}

/* Waits up to timeout_ms and fills loop->fired.  Returns the number of
 * events, 0 when a signal interrupted the wait (the caller's iteration
 * simply goes on; retrying here would need the timeout recomputed), or
 * -errno, which only a bug can cause (EBADF, EFAULT, EINVAL). */
static int
ep_wait(pp_loop *loop, int timeout_ms)
{
    struct pp_epoll *p = loop->poller;
    int i, n;

    n = epoll_wait(p->epfd, p->events, PP_LOOP_MAX_EVENTS, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (i = 0; i < n; i++) {
        uint32_t e = p->events[i].events;
        unsigned ev = 0;

        if (e & EPOLLIN)
            ev |= PP_READABLE;
        if (e & EPOLLOUT)
            ev |= PP_WRITABLE;
        /* Errors and hang-ups are news for both directions: let whichever
         * the owner is waiting for try its syscall and learn the reason. */
        if (e & EPOLLERR)
            ev |= PP_ERROR | PP_READABLE | PP_WRITABLE;
        if (e & EPOLLHUP)
            ev |= PP_HANGUP | PP_READABLE | PP_WRITABLE;
        if (e & EPOLLRDHUP)
            ev |= PP_RDHUP | PP_READABLE;
        loop->fired[i].io = p->events[i].data.ptr;
        loop->fired[i].events = ev;
    }
    return n;
}

static const pp_poller_ops epoll_ops = {
    "epoll", ep_create, ep_free, ep_add, ep_mod, ep_del, ep_wait,
};
