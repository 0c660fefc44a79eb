/* pp_conn.h -- connections on a pp_loop: buffered reads, queued writes.
 *
 * A pp_conn owns one connected, non-blocking socket.  Input is read into a
 * buffer the whole group shares and handed to the owner's on_read, which
 * says how much it consumed; only an unconsumed tail is copied into the
 * connection's own buffer.  Output is a queue of chunks -- copied bytes,
 * caller-owned bytes, file ranges, and markers -- flushed with one
 * sendmsg(2) (writev's socket twin, which also takes MSG_NOSIGNAL and
 * MSG_MORE) for as many chunks as fit (PP_CONN_IOV_MAX) and sendfile(2) for
 * files, so that many small writes made by one callback cost one syscall.
 * Writes made from on_read are flushed as soon as the connection's read
 * pass ends; writes made anywhere else are flushed in the loop's pending
 * phase, after every other callback of the iteration.
 *
 * Each connection lives in its own pp_arena, taken from the group's chunk
 * cache and released in one step once the connection has closed: the
 * pp_conn itself and whatever the owner allocates with pp_conn_alloc().
 * Output blocks come from a pool the group shares, so a connection that has
 * nothing queued holds no output memory (PyParallel's per-context heap on
 * the C side, without making idle connections pay for their busiest
 * moment).
 *
 * Back-pressure: when more than write_high bytes are queued the owner's
 * on_pause_writing runs, pp_conn_write() starts returning 1 and the
 * connection stops reading; once the queue drains to write_low,
 * on_resume_writing runs and reading resumes.
 *
 * Closing: pp_conn_close() sends what is queued and then closes;
 * pp_conn_abort() closes at once.  Either way, and on any error or idle
 * timeout, the fd is closed at once and on_close(c, err) runs in the loop's
 * pending phase, after which the connection's memory is gone.  err is 0 for
 * a close asked for by the owner or the peer (EOF), else -errno
 * (-ECONNRESET, -EPIPE, -ETIMEDOUT for the idle timeout, -ENOBUFS when
 * unconsumed input exceeds read_max).
 *
 * Errors: 0 or -errno, like the rest of the engine.  Everything here runs on
 * the loop's thread.  sendfile(2) can raise SIGPIPE (sendmsg is told not
 * to): the thread must block or ignore it (pp_thread_start blocks every
 * signal; CPython ignores SIGPIPE).  No Python here.
 */
#ifndef PP_CONN_H
#define PP_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "pp_arena.h"
#include "pp_loop.h"

/* Fairness caps: after this many reads (or write syscalls, or accepts) in
 * one go, the rest waits for the pending phase, so one busy connection or
 * listener cannot keep every other one waiting.  With edge-triggered
 * polling no new event would come for data already there, hence the
 * explicit pending call.  32 reads of 64 KiB is libuv's choice too. */
#define PP_CONN_MAX_READS 32
#define PP_CONN_MAX_WRITES 16
#define PP_ACCEPT_MAX 64
/* Chunks gathered into one sendmsg (IOV_MAX is 1024; 64 already moves more
 * than a socket buffer holds when chunks are blocks). */
#define PP_CONN_IOV_MAX 64
/* The group's shared read buffer. */
#define PP_CONN_READ_SIZE 65536
/* Output blocks: small writes are copied into the last block while it has
 * room; writes bigger than a block get a block of their own size. */
#define PP_CONN_BLOCK_SIZE 16384
#define PP_CONN_POOL_BLOCKS 64
/* How long an acceptor waits after EMFILE, ENFILE, ENOBUFS or ENOMEM before
 * it tries again (the connection stays in the listen backlog meanwhile). */
#define PP_ACCEPT_RETRY_NS (100 * PP_NS_PER_MS)

typedef struct pp_conn pp_conn;
typedef struct pp_conn_group pp_conn_group;

/* The owner's callbacks, usually one static const table per kind of
 * connection.  Any may be NULL.  All run on the loop's thread. */
typedef struct pp_conn_handler {
    /* The connection is established: accepted, or its connect completed.
     * For a connection opened by pp_conn_open() on a connected fd, this
     * runs before pp_conn_open() returns. */
    void (*on_open)(pp_conn *c);
    /* Input.  data/len is every byte not yet consumed (older bytes first);
     * it is valid only during the call.  Returns how many bytes were
     * consumed; the rest is kept and presented again, followed by new
     * input.  NULL: input is discarded. */
    size_t (*on_read)(pp_conn *c, const char *data, size_t len);
    /* The peer shut its side (read returned 0).  NULL: pp_conn_close(),
     * i.e. send what is queued, then close.  Otherwise the owner may go on
     * writing and close or pp_conn_shutdown() when done; once both sides are
     * shut the connection closes by itself. */
    void (*on_eof)(pp_conn *c);
    /* Every byte queued before pp_conn_mark(c, id) has been handed to the
     * kernel.  May write more (this is how a generator feeds a socket at
     * the socket's pace). */
    void (*on_sent)(pp_conn *c, uint64_t id);
    /* The output queue rose above the high-water mark / drained to the
     * low-water mark.  Reading is paused in between. */
    void (*on_pause_writing)(pp_conn *c);
    void (*on_resume_writing)(pp_conn *c);
    /* The connection is closed; see "Closing" above.  Runs exactly once per
     * pp_conn_open() that succeeded, also for a connect that failed (then
     * without on_open).  The pp_conn and its arena are freed when this
     * returns. */
    void (*on_close)(pp_conn *c, int err);
} pp_conn_handler;

typedef struct pp_conn_config {
    size_t write_high;       /* queued bytes that pause (64 KiB) */
    size_t write_low;        /* queued bytes that resume (16 KiB) */
    size_t read_max;         /* unconsumed input allowed (1 MiB) */
    uint64_t idle_timeout_ns;/* close after this long without I/O; 0: never */
    size_t max_conns;        /* acceptors stop at this many; 0: no limit */
    size_t arena_chunk;      /* a connection's arena chunk (1 KiB) */
    size_t cached_chunks;    /* arena chunks the group keeps for reuse */
} pp_conn_config;

/* Fills cfg with the defaults shown above. */
void pp_conn_config_default(pp_conn_config *cfg);

typedef struct pp_conn_stats {
    uint64_t accepted;       /* by acceptors */
    uint64_t opened;         /* on_open calls */
    uint64_t closed;         /* on_close calls */
    uint64_t read_calls;     /* read(2) */
    uint64_t bytes_read;
    uint64_t write_calls;    /* sendmsg(2) */
    uint64_t sendfile_calls; /* sendfile(2) */
    uint64_t bytes_written;
    uint64_t write_pauses;   /* high-water crossings */
} pp_conn_stats;

/* The connections of one loop, and what they share: configuration, the
 * read buffer, the pool of output blocks and the cache of arena chunks.
 * Caller-owned (embed it in the worker's state). */
struct pp_conn_group {
    pp_loop *loop;
    pp_conn_config cfg;
    size_t count;            /* connections open or closing */
    pp_conn_stats stats;
    /* Private. */
    pp_link conns;
    pp_link acceptors;
    char *rbuf;
    void *free_blocks;
    size_t nfree_blocks;
    size_t live_blocks;      /* output blocks allocated, pool included */
    pp_chunk_cache chunks;
};

/* cfg NULL: defaults.  Returns 0 or -ENOMEM. */
int pp_conn_group_init(pp_conn_group *g, pp_loop *loop,
                       const pp_conn_config *cfg);

/* Aborts every connection (on_close(c, 0) follows in the pending phase). */
void pp_conn_group_close_all(pp_conn_group *g);

/* Frees what the group holds.  Returns -EBUSY, and frees nothing, while a
 * connection is open or closing or an acceptor is started. */
int pp_conn_group_destroy(pp_conn_group *g);

/* ---- a connection ------------------------------------------------------ */

/* pp_conn_open flags. */
#define PP_CONN_CONNECTING 1u    /* fd is mid-connect (pp_net_connect_*) */

/* Makes a connection of fd, which it then owns and closes.  data is the
 * owner's (pp_conn_data).  *out is set before on_open runs.  Returns 0 or
 * -errno; on failure fd is left open. */
int pp_conn_open(pp_conn_group *g, int fd, unsigned flags,
                 const pp_conn_handler *h, void *data, pp_conn **out);

/* Queues a copy of n bytes.  Returns 0, 1 when the queue is now above the
 * high-water mark (stop producing until on_resume_writing), or -EPIPE
 * (closing, or shut down for writing) or -ENOMEM; nothing is queued on
 * failure. */
int pp_conn_write(pp_conn *c, const void *data, size_t n);

/* The same for several pieces, copied in order into as few blocks as
 * possible. */
int pp_conn_writev(pp_conn *c, const struct iovec *iov, int iovcnt);

typedef void (*pp_release_proc)(void *ctx);

/* Queues n bytes without copying them: they must stay unchanged until
 * release(ctx) runs, exactly once, on the loop's thread, when they have
 * been sent or the connection has closed.  release may be NULL.  Returns
 * as pp_conn_write(); on failure release is not called. */
int pp_conn_write_ref(pp_conn *c, const void *data, size_t n,
                      pp_release_proc release, void *ctx);

/* A file range for pp_conn_sendfile(): the before bytes, count bytes of the
 * file from offset, then the after bytes, in order with everything else in
 * the queue.  before and after are copied; fd is read with sendfile(2) and,
 * with PP_FILE_CLOSE, closed when sent or when the connection closes. */
#define PP_FILE_CLOSE 1u
#define PP_FILE_TO_END ((size_t)-1)   /* count: up to the file's end now */

typedef struct pp_conn_file {
    int fd;
    unsigned flags;
    off_t offset;
    size_t count;
    const void *before;
    size_t before_len;
    const void *after;
    size_t after_len;
} pp_conn_file;

/* Queues f.  Returns as pp_conn_write(), or -EINVAL for an offset past the
 * end with PP_FILE_TO_END or -errno from fstat; on failure nothing is
 * queued and fd is not closed.  A file that turns out shorter than count
 * while being sent closes the connection with -EIO. */
int pp_conn_sendfile(pp_conn *c, const pp_conn_file *f);

/* Queues a marker: on_sent(c, id) runs once every byte queued before it is
 * written.  Returns 0, -EPIPE or -ENOMEM. */
int pp_conn_mark(pp_conn *c, uint64_t id);

/* Half-close: shuts the write side (SHUT_WR) once the queue has drained;
 * reading goes on.  Later writes fail with -EPIPE.  Returns 0 or -EPIPE. */
int pp_conn_shutdown(pp_conn *c);

/* Stops reading, sends what is queued, then closes (on_close(c, 0)).  The
 * idle timeout, if set, still bounds how long that may take. */
void pp_conn_close(pp_conn *c);

/* Closes now, dropping whatever is queued (on_close(c, 0)). */
void pp_conn_abort(pp_conn *c);

/* Stops / resumes calling on_read.  Independent of the back-pressure pause:
 * reading happens only when neither holds it. */
void pp_conn_pause_reading(pp_conn *c);
void pp_conn_resume_reading(pp_conn *c);

/* Presents the input kept unconsumed to on_read again, in the pending
 * phase, without waiting for new input (an owner that stopped consuming
 * -- too many requests in flight -- and can go on now).  Nothing happens
 * if no input is kept or reading is paused. */
void pp_conn_read_again(pp_conn *c);

/* Changes the water marks of one connection (0: the group's). */
void pp_conn_set_water(pp_conn *c, size_t high, size_t low);

/* Closes the connection with -ETIMEDOUT after ns without input or output
 * progress (0: never).  The clock restarts now.  Returns 0 or -ENOMEM. */
int pp_conn_set_idle_timeout(pp_conn *c, uint64_t ns);

/* Memory that lives exactly as long as the connection (until on_close has
 * returned), 16-byte aligned, not zero-filled.  NULL when out of memory. */
void *pp_conn_alloc(pp_conn *c, size_t size);

/* Accessors. */
int pp_conn_fd(const pp_conn *c);            /* -1 once closing */
void *pp_conn_data(const pp_conn *c);
void pp_conn_set_data(pp_conn *c, void *data);
pp_loop *pp_conn_loop(const pp_conn *c);
pp_conn_group *pp_conn_get_group(const pp_conn *c);
size_t pp_conn_queued(const pp_conn *c);     /* bytes waiting to be sent */
int pp_conn_closing(const pp_conn *c);       /* closed or closing */
/* Input kept unconsumed so far (e.g. a last line without its newline, in
 * on_eof). */
const char *pp_conn_unconsumed(const pp_conn *c, size_t *len);
/* Bytes this connection holds: its arena and its input buffer (not its
 * queued output, which is counted by pp_conn_queued). */
size_t pp_conn_memory(const pp_conn *c);

/* ---- accepting --------------------------------------------------------- */

/* Accepts connections from a listening socket into a group.  Caller-owned;
 * several acceptors may feed one group (one per listener). */
typedef struct pp_acceptor {
    pp_conn_group *group;
    const pp_conn_handler *handler;
    void *data;              /* becomes each connection's data */
    int fd;                  /* the listener; not owned */
    int err;                 /* the last error that made it back off */
    uint64_t accepted;
    /* Private. */
    pp_io io;
    pp_pending pend;
    pp_timer retry;
    pp_link link;
    int blocked;             /* at max_conns; woken when one closes */
} pp_acceptor;

/* Starts accepting from listen_fd (non-blocking; pp_net_listen_*).  Each
 * connection is opened with h and data; on_open tells the owner about it.
 * Accepting pauses while the group holds cfg.max_conns connections.
 * Returns 0 or -errno. */
int pp_acceptor_start(pp_acceptor *a, pp_conn_group *g, int listen_fd,
                      const pp_conn_handler *h, void *data);

/* Stops accepting; does not close the listener.  May be called from any
 * callback, but an acceptor stopped from on_open of a connection it has
 * just accepted must stay allocated until that on_open returns. */
void pp_acceptor_stop(pp_acceptor *a);

#endif /* PP_CONN_H */
