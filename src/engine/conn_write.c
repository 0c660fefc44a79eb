/* conn_write.c -- a pp_conn's output queue (see pp_conn.h).
 *
 * The queue is a singly linked list of chunks: bytes copied into blocks
 * (small writes fill the last block while it has room), caller-owned bytes,
 * file ranges and markers.  A flush gathers the byte chunks at the front
 * into one sendmsg(2), hands file ranges to sendfile(2) -- with MSG_MORE on
 * the bytes just before a file, so a header and the file's first bytes may
 * share a packet -- and runs on_sent for each marker it passes.  Blocks
 * come from a pool the group shares; descriptors of the other chunks come
 * from the connection's arena and are recycled on a per-connection list.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "conn_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- memory ------------------------------------------------------------ */

/* A block for at least need bytes, from the pool when it fits one.  Pooled
 * blocks are all PP_CONN_BLOCK_SIZE with the descriptor in front; a bigger
 * write gets a block of exactly its size, freed once sent, so one large
 * response does not pin memory in the pool. */
static seg *
block_get(pp_conn_group *g, size_t need)
{
    seg *s;

    if (need <= BLOCK_CAP && g->free_blocks) {
        s = g->free_blocks;
        g->free_blocks = s->next;
        g->nfree_blocks--;
    } else {
        if (need > BLOCK_CAP && need > SIZE_MAX - sizeof(seg))
            return NULL;
        s = malloc(need <= BLOCK_CAP ? PP_CONN_BLOCK_SIZE
                                     : sizeof(seg) + need);
        if (s == NULL)
            return NULL;
        g->live_blocks++;
    }
    s->next = NULL;
    s->kind = SEG_BYTES;
    s->flags = need <= BLOCK_CAP;
    s->p = (const char *)(s + 1);
    s->off = s->len = 0;
    s->cap = need <= BLOCK_CAP ? BLOCK_CAP : need;
    return s;
}

static void
block_put(pp_conn_group *g, seg *s)
{
    if (s->flags && g->nfree_blocks < PP_CONN_POOL_BLOCKS) {
        s->next = g->free_blocks;
        g->free_blocks = s;
        g->nfree_blocks++;
        return;
    }
    g->live_blocks--;
    free(s);
}

/* A descriptor for a REF, FILE or MARK chunk. */
static seg *
desc_get(pp_conn *c, int kind)
{
    seg *s = c->free_segs;

    if (s)
        c->free_segs = s->next;
    else if ((s = pp_arena_alloc(&c->arena, sizeof(*s))) == NULL)
        return NULL;
    memset(s, 0, sizeof(*s));
    s->kind = kind;
    s->fd = -1;
    return s;
}

/* Frees a chunk that has left the queue (sent or discarded). */
static void
seg_free(pp_conn *c, seg *s)
{
    switch (s->kind) {
    case SEG_BYTES:
        block_put(c->group, s);
        return;
    case SEG_REF:
        if (s->release)
            s->release(s->ctx);
        break;
    case SEG_FILE:
        if (s->flags & PP_FILE_CLOSE)
            close(s->fd);
        break;
    }
    s->next = c->free_segs;
    c->free_segs = s;
}

static void
enqueue(pp_conn *c, seg *s)
{
    s->next = NULL;
    if (c->tail)
        c->tail->next = s;
    else
        c->head = s;
    c->tail = s;
}

static seg *
dequeue(pp_conn *c)
{
    seg *s = c->head;

    c->head = s->next;
    if (c->head == NULL)
        c->tail = NULL;
    return s;
}

void
pp__conn_drop_output(pp_conn *c)
{
    while (c->head)
        seg_free(c, dequeue(c));
    c->queued = 0;
}

/* ---- writing ----------------------------------------------------------- */

void
pp__conn_schedule_write(pp_conn *c)
{
    if (c->flags & (C_IN_IO | C_CONNECTING | C_CLOSING))
        return;
    pp__conn_defer(c, C_PEND_WRITE);
}

/* After queueing: tells the owner when the queue crosses the high mark.
 * Returns what pp_conn_write() returns on success. */
static int
water_up(pp_conn *c)
{
    if (!(c->flags & C_WRITE_PAUSED) && c->queued > c->high) {
        c->flags |= C_WRITE_PAUSED | C_PAUSED_WATER;
        c->group->stats.write_pauses++;
        if (c->h->on_pause_writing)
            c->h->on_pause_writing(c);
    }
    return (c->flags & C_WRITE_PAUSED) ? 1 : 0;
}

/* After sending: tells the owner when the queue is down to the low mark. */
void
pp__conn_water_down(pp_conn *c)
{
    if ((c->flags & C_WRITE_PAUSED) && c->queued <= c->low) {
        c->flags &= ~(C_WRITE_PAUSED | C_PAUSED_WATER);
        pp__conn_schedule_read(c);
        if (c->h->on_resume_writing)
            c->h->on_resume_writing(c);
    }
}

static int
write_refused(const pp_conn *c)
{
    return (c->flags & (C_CLOSING | C_CLOSE_WANTED | C_SHUT_WANTED)) != 0;
}

int
pp_conn_writev(pp_conn *c, const struct iovec *iov, int iovcnt)
{
    seg *t = c->tail, *ns = NULL;
    size_t total = 0, room = 0, k;
    int i;

    if (write_refused(c))
        return -EPIPE;
    for (i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > SIZE_MAX / 2 - total)
            return -ENOMEM;
        total += iov[i].iov_len;
    }
    if (total == 0)
        return water_up(c);
    if (t && t->kind == SEG_BYTES)
        room = t->cap - t->len;
    else
        t = NULL;
    /* The one allocation that can fail comes before any copying. */
    if (total > room && (ns = block_get(c->group, total - room)) == NULL)
        return -ENOMEM;
    for (i = 0; i < iovcnt; i++) {
        const char *p = iov[i].iov_base;
        size_t n = iov[i].iov_len;

        if (room) {
            k = n < room ? n : room;
            memcpy((char *)t->p + t->len, p, k);
            t->len += k;
            room -= k;
            p += k;
            n -= k;
        }
        if (n) {
            memcpy((char *)ns->p + ns->len, p, n);
            ns->len += n;
        }
    }
    if (ns)
        enqueue(c, ns);
    c->queued += total;
    pp__conn_schedule_write(c);
    return water_up(c);
}

int
pp_conn_write(pp_conn *c, const void *data, size_t n)
{
    struct iovec v;

    v.iov_base = (void *)data;
    v.iov_len = n;
    return pp_conn_writev(c, &v, 1);
}

int
pp_conn_write_ref(pp_conn *c, const void *data, size_t n,
                  pp_release_proc release, void *ctx)
{
    seg *s;

    if (write_refused(c))
        return -EPIPE;
    if ((s = desc_get(c, SEG_REF)) == NULL)
        return -ENOMEM;
    s->p = data;
    s->len = n;
    s->release = release;
    s->ctx = ctx;
    enqueue(c, s);
    c->queued += n;
    pp__conn_schedule_write(c);
    return water_up(c);
}

int
pp_conn_sendfile(pp_conn *c, const pp_conn_file *f)
{
    seg *before = NULL, *file, *after = NULL;
    size_t count = f->count;
    struct stat st;

    if (write_refused(c))
        return -EPIPE;
    if (count == PP_FILE_TO_END) {
        if (fstat(f->fd, &st) < 0)
            return -errno;
        if (f->offset < 0 || f->offset > st.st_size)
            return -EINVAL;
        count = (size_t)(st.st_size - f->offset);
    }
    if (f->offset < 0)
        return -EINVAL;
    if ((file = desc_get(c, SEG_FILE)) == NULL)
        return -ENOMEM;
    if (f->before_len)
        before = block_get(c->group, f->before_len);
    if (f->after_len)
        after = block_get(c->group, f->after_len);
    if ((f->before_len && before == NULL) || (f->after_len && after == NULL)) {
        if (before)
            block_put(c->group, before);
        file->kind = SEG_MARK;   /* so seg_free only recycles it */
        seg_free(c, file);
        return -ENOMEM;
    }
    file->fd = f->fd;
    file->flags = f->flags & PP_FILE_CLOSE;
    file->foff = f->offset;
    file->len = count;
    if (before) {
        memcpy((char *)before->p, f->before, f->before_len);
        before->len = f->before_len;
        enqueue(c, before);
    }
    enqueue(c, file);
    if (after) {
        memcpy((char *)after->p, f->after, f->after_len);
        after->len = f->after_len;
        enqueue(c, after);
    }
    c->queued += f->before_len + count + f->after_len;
    pp__conn_schedule_write(c);
    return water_up(c);
}

int
pp_conn_mark(pp_conn *c, uint64_t id)
{
    seg *s;

    if (write_refused(c))
        return -EPIPE;
    if ((s = desc_get(c, SEG_MARK)) == NULL)
        return -ENOMEM;
    s->id = id;
    enqueue(c, s);
    pp__conn_schedule_write(c);
    return 0;
}

/* Removes n sent bytes from the front of the queue: whole chunks are freed
 * (references released), a partly sent one keeps its offset.  Chunks of
 * zero bytes at the front go too, which is how empty writes leave. */
static void
consume(pp_conn *c, size_t n)
{
    seg *s;

    c->queued -= n;
    while ((s = c->head) && (s->kind == SEG_BYTES || s->kind == SEG_REF)) {
        size_t left = s->len - s->off;

        if (n < left) {
            s->off += n;
            break;
        }
        n -= left;
        seg_free(c, dequeue(c));
    }
}

/* Sends the byte chunks at the front of the queue with one sendmsg.
 * Returns bytes sent, or -errno (-EAGAIN: the socket is full). */
static ssize_t
send_bytes(pp_conn *c)
{
    struct iovec iov[PP_CONN_IOV_MAX];
    struct msghdr msg;
    int niov = 0, flags = MSG_NOSIGNAL;
    ssize_t n;
    seg *s;

    for (s = c->head; s && niov < PP_CONN_IOV_MAX; s = s->next) {
        if (s->kind != SEG_BYTES && s->kind != SEG_REF)
            break;
        if (s->len > s->off) {
            iov[niov].iov_base = (char *)s->p + s->off;
            iov[niov].iov_len = s->len - s->off;
            niov++;
        }
    }
    if (niov == 0) {             /* only empty chunks: drop them */
        consume(c, 0);
        return 0;
    }
    /* A file comes next: let its first bytes share a packet with ours. */
    if (s && s->kind == SEG_FILE)
        flags |= MSG_MORE;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)niov;
    do
        n = sendmsg(c->fd, &msg, flags);
    while (n < 0 && errno == EINTR);
    c->group->stats.write_calls++;
    if (n < 0)
        return -errno;
    consume(c, (size_t)n);
    return n;
}

/* Largest count sendfile(2) takes in one call. */
#define SENDFILE_MAX 0x7ffff000u

/* Sends from the file chunk at the front.  Returns bytes sent or -errno. */
static ssize_t
send_file(pp_conn *c, seg *s)
{
    ssize_t n;

    if (s->len == 0) {
        seg_free(c, dequeue(c));
        return 0;
    }
    do
        n = sendfile(c->fd, s->fd, &s->foff,
                     s->len < SENDFILE_MAX ? s->len : SENDFILE_MAX);
    while (n < 0 && errno == EINTR);
    c->group->stats.sendfile_calls++;
    if (n < 0)
        return -errno;
    if (n == 0)
        return -EIO;             /* the file ended before count bytes */
    s->len -= (size_t)n;
    c->queued -= (size_t)n;
    if (s->len == 0)
        seg_free(c, dequeue(c));
    return n;
}

/* A shutdown's ENOTCONN means the peer reset us first; the next read will
 * say so. */
void
pp__conn_drained(pp_conn *c)
{
    if (c->flags & C_CLOSE_WANTED) {
        pp__conn_fail(c, 0);
        return;
    }
    if ((c->flags & (C_SHUT_WANTED | C_SHUT_DONE)) == C_SHUT_WANTED) {
        c->flags |= C_SHUT_DONE;
        if (shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTCONN) {
            pp__conn_fail(c, -errno);
            return;
        }
        if (c->flags & C_EOF)
            pp__conn_fail(c, 0);     /* both sides are shut: done */
    }
}

/* Writes as much of the queue as the socket takes, up to
 * PP_CONN_MAX_WRITES syscalls.  Markers reached on the way run on_sent,
 * which may queue more: the loop goes on with it, which is how a generator
 * keeps a socket busy without ever queueing more than one chunk ahead.
 * C_IN_IO tells writes made meanwhile not to schedule a flush of their
 * own. */
void
pp__conn_flush(pp_conn *c)
{
    unsigned in_io = c->flags & C_IN_IO;
    int writes = 0;
    ssize_t n;
    seg *s;

    if (c->flags & (C_CLOSING | C_CONNECTING))
        return;
    /* A pending flush, if queued, has nothing left to do. */
    c->flags = (c->flags & ~C_PEND_WRITE) | C_IN_IO;
    while ((s = c->head) != NULL) {
        if (s->kind == SEG_MARK) {
            uint64_t id = s->id;

            seg_free(c, dequeue(c));
            if (c->h->on_sent) {
                c->h->on_sent(c, id);
                if (c->flags & C_CLOSING)
                    goto out;
            }
            continue;
        }
        if (writes++ == PP_CONN_MAX_WRITES) {
            pp__conn_defer(c, C_PEND_WRITE);
            goto out;
        }
        n = s->kind == SEG_FILE ? send_file(c, s) : send_bytes(c);
        if (n == -EAGAIN)
            break;               /* a writable edge will bring us back */
        if (n < 0) {
            pp__conn_fail(c, (int)n);
            goto out;
        }
        if (n > 0) {
            c->group->stats.bytes_written += (uint64_t)n;
            c->last_active = pp_loop_now(c->group->loop);
        }
        pp__conn_water_down(c);
        if (c->flags & C_CLOSING)
            goto out;
    }
    if (c->head == NULL)
        pp__conn_drained(c);
out:
    c->flags = (c->flags & ~C_IN_IO) | in_io;
}
