/* accept.c -- pp_acceptor (see pp_conn.h): a listener feeding a group.
 *
 * With edge-triggered polling an acceptor must accept until EAGAIN or
 * remember that it stopped: after PP_ACCEPT_MAX connections it continues in
 * the pending phase, at max_conns it waits for a connection to close, and
 * after running out of fds or memory it retries on a timer.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "pp_conn.h"
#include "pp_net.h"
#include "pp_queue.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

static void accept_some(pp_acceptor *a);

static void
acceptor_io(pp_loop *loop, pp_io *io, unsigned events)
{
    (void)loop;
    (void)events;
    accept_some(pp_container_of(io, pp_acceptor, io));
}

static void
acceptor_pending(pp_loop *loop, pp_pending *p)
{
    (void)loop;
    accept_some(pp_container_of(p, pp_acceptor, pend));
}

static void
acceptor_retry(pp_loop *loop, pp_timer *t)
{
    (void)loop;
    accept_some(pp_container_of(t, pp_acceptor, retry));
}

/* Errors that belong to one connection only (accept(2) lists the network
 * errors a new socket may already carry): skip it and go on. */
static int
skippable(int err)
{
    switch (-err) {
    case ECONNABORTED:
    case EPROTO:
    case EPERM:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case ENETUNREACH:
        return 1;
    }
    return 0;
}

static void
accept_some(pp_acceptor *a)
{
    pp_conn_group *g = a->group;
    pp_conn *c;
    int n, fd;

    for (n = 0;; n++) {
        if (g->cfg.max_conns && g->count >= g->cfg.max_conns) {
            a->blocked = 1;      /* finalize() wakes us */
            return;
        }
        if (n == PP_ACCEPT_MAX) {
            pp_pending_add(g->loop, &a->pend, acceptor_pending);
            return;
        }
        if ((fd = pp_net_accept(a->fd, 0)) < 0) {
            if (fd == -EAGAIN)
                return;
            if (skippable(fd))
                continue;
            /* Out of fds or memory, or the listener is broken: back off
             * and try again (the backlog holds the connections). */
            a->err = fd;
            (void)pp_timer_start(g->loop, &a->retry, PP_ACCEPT_RETRY_NS, 0,
                                 acceptor_retry, NULL);
            return;
        }
        g->stats.accepted++;
        a->accepted++;
        if (pp_conn_open(g, fd, 0, a->handler, a->data, &c) < 0)
            close(fd);
        if (!pp_link_linked(&a->link))
            return;              /* on_open stopped us */
    }
}

int
pp_acceptor_start(pp_acceptor *a, pp_conn_group *g, int listen_fd,
                  const pp_conn_handler *h, void *data)
{
    int rc;

    memset(a, 0, sizeof(*a));
    a->group = g;
    a->handler = h;
    a->data = data;
    a->fd = listen_fd;
    a->pend.proc = acceptor_pending;
    rc = pp_io_register(g->loop, &a->io, listen_fd, PP_READABLE, acceptor_io,
                        a);
    if (rc < 0)
        return rc;
    pp_link_append(&g->acceptors, &a->link);
    return 0;
}

void
pp_acceptor_stop(pp_acceptor *a)
{
    pp_loop *loop = a->group->loop;

    if (!pp_link_linked(&a->link))
        return;
    (void)pp_io_unregister(loop, &a->io);
    pp_pending_cancel(loop, &a->pend);
    pp_timer_stop(loop, &a->retry);
    pp_link_remove(&a->link);
}
