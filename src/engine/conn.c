/* conn.c -- see pp_conn.h.
 *
 * A connection is registered once for PP_READABLE | PP_WRITABLE,
 * edge-triggered, and never modified: a writable edge arrives only when a
 * full socket buffer gains room, so leaving PP_WRITABLE on costs nothing and
 * saves an epoll_ctl each time a write would block (nginx does the same).
 * The price of edge triggering is that the connection must remember what
 * the kernel will not repeat: C_READABLE says input may be waiting although
 * no read has been tried since the last edge (reading was paused, or the
 * fairness cap hit).
 *
 * Everything deferred goes through one pp_pending per connection, whose
 * call looks at the flags: C_CLOSING (free the connection), C_PEND_READ,
 * C_PEND_WRITE.
 *
 * This file: opening, reading, events, closing, the group.  The output
 * queue is in conn_write.c, accepting in accept.c.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "conn_internal.h"
#include "pp_net.h"
#include "pp_queue.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void conn_pending(pp_loop *loop, pp_pending *p);

/* ---- closing ----------------------------------------------------------- */

void
pp__conn_fail(pp_conn *c, int err)
{
    pp_loop *loop = c->group->loop;

    if (c->flags & C_CLOSING)
        return;
    c->flags |= C_CLOSING;
    c->err = err;
    (void)pp_io_unregister(loop, &c->io);
    close(c->fd);                /* never retried: Linux frees it anyway */
    c->fd = -1;
    pp_timer_stop(loop, &c->idle);
    pp_pending_add(loop, &c->pend, conn_pending);
}

static void
wake_acceptors(pp_conn_group *g)
{
    pp_link *l;

    for (l = g->acceptors.next; l != &g->acceptors; l = l->next) {
        pp_acceptor *a = pp_container_of(l, pp_acceptor, link);

        if (a->blocked) {
            a->blocked = 0;
            pp_pending_add(g->loop, &a->pend, a->pend.proc);
        }
    }
}

/* The closing phase: runs in the pending call after pp__conn_fail(). */
static void
finalize(pp_conn *c)
{
    pp_conn_group *g = c->group;
    pp_arena arena;

    pp__conn_drop_output(c);
    pp_link_remove(&c->link);
    g->count--;
    g->stats.closed++;
    if (c->h->on_close)
        c->h->on_close(c, c->err);
    pp_buf_free(&c->rbuf);
    /* The arena struct lives inside the memory it is about to release. */
    arena = c->arena;
    pp_arena_release(&arena);
    if (g->cfg.max_conns && g->count < g->cfg.max_conns)
        wake_acceptors(g);
}

void
pp__conn_defer(pp_conn *c, unsigned flag)
{
    c->flags |= flag;
    pp_pending_add(c->group->loop, &c->pend, conn_pending);
}

void
pp__conn_schedule_read(pp_conn *c)
{
    if ((c->flags & C_NO_READ) || !(c->flags & C_READABLE))
        return;
    pp__conn_defer(c, C_PEND_READ);
}

/* ---- reading ----------------------------------------------------------- */

/* Hands input to the owner and keeps what it does not consume.  Input is
 * read into the group's buffer, and in the common case -- the owner
 * consumes everything -- it is never copied; only a tail the owner leaves
 * (half a line, half a message) moves into the connection's own buffer,
 * and the next input is appended to it. */
static void
deliver(pp_conn *c, const char *p, size_t n)
{
    const char *data = p;
    size_t len = n, used, rest;

    if (c->rbuf.len) {
        if (n > c->group->cfg.read_max - c->rbuf.len) {
            pp__conn_fail(c, -ENOBUFS);
            return;
        }
        if (n && pp_buf_put(&c->rbuf, p, n) < 0) {
            pp__conn_fail(c, -ENOMEM);
            return;
        }
        data = (const char *)c->rbuf.data;
        len = c->rbuf.len;
    }
    used = c->h->on_read ? c->h->on_read(c, data, len) : len;
    if (c->flags & C_CLOSING)
        return;
    if (used > len)
        used = len;
    rest = len - used;
    if (rest == 0) {
        /* Keep a small buffer for the next tail; give back a big one. */
        if (c->rbuf.cap > 4096)
            pp_buf_free(&c->rbuf);
        c->rbuf.len = 0;
        return;
    }
    if (rest > c->group->cfg.read_max) {
        pp__conn_fail(c, -ENOBUFS);
        return;
    }
    if (data == (const char *)c->rbuf.data) {
        if (used)
            memmove(c->rbuf.data, c->rbuf.data + used, rest);
        c->rbuf.len = rest;
    } else if (pp_buf_put(&c->rbuf, data + used, rest) < 0) {
        pp__conn_fail(c, -ENOMEM);
    }
}

/* The peer shut its side.  Without on_eof the connection finishes sending
 * and closes; with it the owner decides.  Once our side is shut as well
 * there is nothing left to do. */
static void
got_eof(pp_conn *c)
{
    c->flags |= C_EOF;
    if (c->h->on_eof)
        c->h->on_eof(c);
    else
        pp_conn_close(c);
    if ((c->flags & (C_CLOSING | C_SHUT_DONE)) == C_SHUT_DONE)
        pp__conn_fail(c, 0);
}

/* Reads until EAGAIN, EOF, a pause or PP_CONN_MAX_READS reads, then flushes
 * what the owner wrote meanwhile. */
static void
do_read(pp_conn *c)
{
    pp_conn_group *g = c->group;
    unsigned in_io = c->flags & C_IN_IO;
    ssize_t r;
    int n;

    c->flags |= C_IN_IO;
    for (n = 0; (c->flags & (C_NO_READ | C_READABLE)) == C_READABLE; n++) {
        if (n == PP_CONN_MAX_READS) {
            pp__conn_defer(c, C_PEND_READ);
            break;
        }
        do
            r = read(c->fd, g->rbuf, PP_CONN_READ_SIZE);
        while (r < 0 && errno == EINTR);
        g->stats.read_calls++;
        if (r < 0) {
            if (errno == EAGAIN)
                c->flags &= ~C_READABLE;
            else
                pp__conn_fail(c, -errno);
            break;
        }
        if (r == 0) {
            c->flags &= ~C_READABLE;
            got_eof(c);
            break;
        }
        g->stats.bytes_read += (uint64_t)r;
        c->last_active = pp_loop_now(g->loop);
        /* A short read emptied the socket, and data arriving after it
         * raises a new edge, so there is no need to read until EAGAIN --
         * unless the peer's FIN came with the same edge. */
        if (r < PP_CONN_READ_SIZE && !(c->flags & C_RDHUP))
            c->flags &= ~C_READABLE;
        deliver(c, g->rbuf, (size_t)r);
    }
    c->flags = (c->flags & ~C_IN_IO) | in_io;
    /* Also with nothing queued: a close or shutdown asked for meanwhile
     * may be waiting for the queue to be empty. */
    if (!in_io)
        pp__conn_flush(c);
}

/* ---- events ------------------------------------------------------------ */

static void
opened(pp_conn *c)
{
    c->group->stats.opened++;
    if (c->h->on_open)
        c->h->on_open(c);
}

static void
conn_io(pp_loop *loop, pp_io *io, unsigned events)
{
    pp_conn *c = pp_container_of(io, pp_conn, io);
    int err;

    (void)loop;
    /* A non-blocking connect reports its outcome as writability (or an
     * error); SO_ERROR says which. */
    if (c->flags & C_CONNECTING) {
        if ((err = pp_net_socket_error(c->fd)) < 0) {
            pp__conn_fail(c, err);
            return;
        }
        if (!(events & PP_WRITABLE))
            return;
        c->flags &= ~C_CONNECTING;
        opened(c);
        if (c->flags & C_CLOSING)
            return;
    } else if (events & PP_ERROR) {
        if ((err = pp_net_socket_error(c->fd)) < 0) {
            pp__conn_fail(c, err);
            return;
        }
    }
    if (events & PP_READABLE) {
        c->flags |= C_READABLE;
        if (events & PP_RDHUP)
            c->flags |= C_RDHUP;
        do_read(c);              /* flushes too */
    } else {
        pp__conn_flush(c);
    }
}

static void
conn_pending(pp_loop *loop, pp_pending *p)
{
    pp_conn *c = pp_container_of(p, pp_conn, pend);

    (void)loop;
    if (c->flags & C_CLOSING) {
        finalize(c);
        return;
    }
    if (c->flags & C_PEND_AGAIN) {
        c->flags &= ~C_PEND_AGAIN;
        if (c->rbuf.len && !(c->flags & C_NO_READ)) {
            c->flags |= C_IN_IO;
            deliver(c, NULL, 0);
            c->flags &= ~C_IN_IO;
            if (c->flags & C_CLOSING)
                return;
            pp__conn_flush(c);
            if (c->flags & C_CLOSING)
                return;
        }
    }
    if (c->flags & C_PEND_READ) {
        c->flags &= ~C_PEND_READ;
        do_read(c);
        if (c->flags & C_CLOSING)
            return;              /* conn_fail queued us again */
    }
    if (c->flags & C_PEND_WRITE) {
        c->flags &= ~C_PEND_WRITE;
        pp__conn_flush(c);
    }
}

/* The idle timer is not restarted on every read and write, which would
 * cost a heap update each time: I/O only records last_active, and the
 * timer, when it fires, either closes the connection or sleeps for the
 * rest of the period (nginx and h2o time out lazily in the same way). */
static void
idle_fired(pp_loop *loop, pp_timer *t)
{
    pp_conn *c = t->data;
    uint64_t now = pp_loop_now(loop), idle;

    idle = now > c->last_active ? now - c->last_active : 0;
    if (idle >= c->idle_ns) {
        pp__conn_fail(c, -ETIMEDOUT);
        return;
    }
    /* Cannot fail: the heap slot this timer just left is free. */
    (void)pp_timer_start(loop, t, c->idle_ns - idle, 0, idle_fired, c);
}

/* ---- the public face --------------------------------------------------- */

/* The pp_conn is the first allocation of its own arena, so releasing the
 * arena frees everything the connection and its owner allocated at once;
 * the arena's chunk comes from the group's cache, so opening a connection
 * costs no mmap once the cache is warm. */
int
pp_conn_open(pp_conn_group *g, int fd, unsigned flags,
             const pp_conn_handler *h, void *data, pp_conn **out)
{
    pp_arena arena;
    pp_conn *c;
    int rc;

    pp_arena_init_cached(&arena, &g->chunks);
    if ((c = pp_arena_alloc(&arena, sizeof(*c))) == NULL) {
        pp_arena_release(&arena);
        return -ENOMEM;
    }
    memset(c, 0, sizeof(*c));
    c->arena = arena;            /* from here on the arena is c->arena */
    c->group = g;
    c->h = h;
    c->data = data;
    c->fd = fd;
    c->high = g->cfg.write_high;
    c->low = g->cfg.write_low;
    c->flags = (flags & PP_CONN_CONNECTING) ? C_CONNECTING : 0;
    c->last_active = pp_loop_now(g->loop);
    rc = pp_io_register(g->loop, &c->io, fd, PP_READABLE | PP_WRITABLE,
                        conn_io, c);
    if (rc == 0 && g->cfg.idle_timeout_ns) {
        c->idle_ns = g->cfg.idle_timeout_ns;
        rc = pp_timer_start(g->loop, &c->idle, c->idle_ns, 0, idle_fired, c);
        if (rc < 0)
            (void)pp_io_unregister(g->loop, &c->io);
    }
    if (rc < 0) {
        arena = c->arena;
        pp_arena_release(&arena);
        return rc;
    }
    pp_link_append(&g->conns, &c->link);
    g->count++;
    *out = c;
    if (!(c->flags & C_CONNECTING))
        opened(c);
    return 0;
}

int
pp_conn_shutdown(pp_conn *c)
{
    if (c->flags & C_CLOSING)
        return -EPIPE;
    if (c->flags & (C_SHUT_WANTED | C_CLOSE_WANTED))
        return 0;
    c->flags |= C_SHUT_WANTED;
    /* Inside a read or flush the queue's end is seen anyway. */
    if (c->head == NULL && !(c->flags & (C_CONNECTING | C_IN_IO)))
        pp__conn_drained(c);
    else
        pp__conn_schedule_write(c);
    return 0;
}

void
pp_conn_close(pp_conn *c)
{
    if (c->flags & (C_CLOSING | C_CLOSE_WANTED))
        return;
    c->flags |= C_CLOSE_WANTED;
    if (c->head == NULL || (c->flags & C_CONNECTING))
        pp__conn_fail(c, 0);
    else
        pp__conn_schedule_write(c);
}

void
pp_conn_abort(pp_conn *c)
{
    pp__conn_fail(c, 0);
}

void
pp_conn_pause_reading(pp_conn *c)
{
    c->flags |= C_PAUSED_USER;
}

void
pp_conn_resume_reading(pp_conn *c)
{
    if (!(c->flags & C_PAUSED_USER))
        return;
    c->flags &= ~C_PAUSED_USER;
    pp__conn_schedule_read(c);
}

void
pp_conn_read_again(pp_conn *c)
{
    if (c->rbuf.len && !(c->flags & C_CLOSING))
        pp__conn_defer(c, C_PEND_AGAIN);
}

void
pp_conn_set_water(pp_conn *c, size_t high, size_t low)
{
    c->high = high ? high : c->group->cfg.write_high;
    c->low = low ? low : c->group->cfg.write_low;
    if (c->low > c->high)
        c->low = c->high;
    pp__conn_water_down(c);
}

int
pp_conn_set_idle_timeout(pp_conn *c, uint64_t ns)
{
    pp_loop *loop = c->group->loop;

    if (c->flags & C_CLOSING)
        return 0;
    c->idle_ns = ns;
    c->last_active = pp_loop_now(loop);
    if (ns == 0) {
        pp_timer_stop(loop, &c->idle);
        return 0;
    }
    return pp_timer_start(loop, &c->idle, ns, 0, idle_fired, c);
}

void *
pp_conn_alloc(pp_conn *c, size_t size)
{
    return pp_arena_alloc(&c->arena, size);
}

int
pp_conn_fd(const pp_conn *c)
{
    return c->fd;
}

void *
pp_conn_data(const pp_conn *c)
{
    return c->data;
}

void
pp_conn_set_data(pp_conn *c, void *data)
{
    c->data = data;
}

pp_loop *
pp_conn_loop(const pp_conn *c)
{
    return c->group->loop;
}

pp_conn_group *
pp_conn_get_group(const pp_conn *c)
{
    return c->group;
}

size_t
pp_conn_queued(const pp_conn *c)
{
    return c->queued;
}

int
pp_conn_closing(const pp_conn *c)
{
    return (c->flags & (C_CLOSING | C_CLOSE_WANTED)) != 0;
}

const char *
pp_conn_unconsumed(const pp_conn *c, size_t *len)
{
    *len = c->rbuf.len;
    return (const char *)c->rbuf.data;
}

size_t
pp_conn_memory(const pp_conn *c)
{
    return c->arena.mapped + c->rbuf.cap;
}

/* ---- the group --------------------------------------------------------- */

void
pp_conn_config_default(pp_conn_config *cfg)
{
    cfg->write_high = 64 * 1024;
    cfg->write_low = 16 * 1024;
    cfg->read_max = 1024 * 1024;
    cfg->idle_timeout_ns = 0;
    cfg->max_conns = 0;
    cfg->arena_chunk = 1024;
    cfg->cached_chunks = 1024;
}

int
pp_conn_group_init(pp_conn_group *g, pp_loop *loop, const pp_conn_config *cfg)
{
    pp_conn_config def;

    pp_conn_config_default(&def);
    memset(g, 0, sizeof(*g));
    g->loop = loop;
    g->cfg = cfg ? *cfg : def;
    if (g->cfg.write_high == 0)
        g->cfg.write_high = def.write_high;
    if (g->cfg.write_low > g->cfg.write_high)
        g->cfg.write_low = g->cfg.write_high;
    if (g->cfg.read_max == 0)
        g->cfg.read_max = def.read_max;
    pp_link_init_head(&g->conns);
    pp_link_init_head(&g->acceptors);
    pp_chunk_cache_init(&g->chunks, g->cfg.arena_chunk, g->cfg.cached_chunks);
    if ((g->rbuf = malloc(PP_CONN_READ_SIZE)) == NULL)
        return -ENOMEM;
    return 0;
}

void
pp_conn_group_close_all(pp_conn_group *g)
{
    pp_link *l;

    /* conn_fail leaves the list alone; finalize() unlinks later. */
    for (l = g->conns.next; l != &g->conns; l = l->next)
        pp__conn_fail(pp_container_of(l, pp_conn, link), 0);
}

int
pp_conn_group_destroy(pp_conn_group *g)
{
    seg *s;

    if (g->count || !pp_link_empty(&g->acceptors))
        return -EBUSY;
    while ((s = g->free_blocks) != NULL) {
        g->free_blocks = s->next;
        g->live_blocks--;
        free(s);
    }
    g->nfree_blocks = 0;
    free(g->rbuf);
    g->rbuf = NULL;
    pp_chunk_cache_drain(&g->chunks);
    return 0;
}
