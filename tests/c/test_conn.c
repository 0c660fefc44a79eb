/* test_conn.c -- pp_conn over loopback TCP and Unix sockets: echo with
 * 1,000 clients, writev coalescing, sendfile, back-pressure, RST, half-close,
 * markers, idle timeout, max_conns, partial consumption, close_all.
 *
 * Servers and clients share one loop in this process.  "Raw" clients are
 * plain sockets read by a pp_io sink, so the test sees exactly the bytes on
 * the wire.  Only 127.0.0.1 and Unix sockets are used. */
#include "pp_buf.h"
#include "pp_conn.h"
#include "pp_net.h"
#include "pp_sync.h"
#include "pp_test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#define MS PP_NS_PER_MS

static pp_loop *loop;

/* Runs the loop until cond holds; fails after 10 s. */
#define RUN_UNTIL(cond)                                                      \
    do {                                                                     \
        uint64_t dl_ = pp_now_ns() + 10000 * MS;                             \
        while (!(cond)) {                                                    \
            ASSERT_EQ(pp_loop_run_once(loop, 20), 0);                        \
            if (pp_now_ns() > dl_)                                           \
                PP_TEST_FAIL("timed out waiting for %s", #cond);             \
        }                                                                    \
    } while (0)

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

    nanosleep(&ts, NULL);
}

/* Runs the loop for about ms milliseconds. */
static void
run_for(int ms)
{
    uint64_t end = pp_now_ns() + (uint64_t)ms * MS;

    while (pp_now_ns() < end)
        ASSERT_EQ(pp_loop_run_once(loop, 5), 0);
}

static void
setup(void)
{
    ASSERT_EQ(pp_loop_create(&loop), 0);
}

static void
teardown(void)
{
    ASSERT_EQ(pp_loop_destroy(loop), 0);
    loop = NULL;
}

/* ---- a server: group, listener, acceptor ------------------------------ */

typedef struct server {
    pp_conn_group g;
    pp_acceptor acc;
    int lfd;
    int port;
    int opened;
    int closed;
    int last_err;
    int errors;              /* on_close with err != 0 */
} server;

static server srv;

static void
server_start(const pp_conn_config *cfg, const pp_conn_handler *h)
{
    memset(&srv, 0, sizeof(srv));
    ASSERT_EQ(pp_conn_group_init(&srv.g, loop, cfg), 0);
    srv.lfd = pp_net_listen_tcp("127.0.0.1", 0, 2048, PP_NET_NUMERIC);
    ASSERT_GE(srv.lfd, 0);
    srv.port = pp_net_local_port(srv.lfd);
    ASSERT_EQ(pp_acceptor_start(&srv.acc, &srv.g, srv.lfd, h, &srv), 0);
}

/* Checks that every block went back to the pool and the group can go. */
static void
group_done(pp_conn_group *g)
{
    pp_conn_group_close_all(g);
    RUN_UNTIL(g->count == 0);
    ASSERT_EQ(g->live_blocks, g->nfree_blocks);
    ASSERT_EQ(g->stats.opened, g->stats.closed);
    ASSERT_EQ(pp_conn_group_destroy(g), 0);
}

static void
server_stop(void)
{
    ASSERT_EQ(pp_conn_group_destroy(&srv.g), -EBUSY);   /* acceptor on */
    pp_acceptor_stop(&srv.acc);
    close(srv.lfd);
    group_done(&srv.g);
}

static void
srv_opened(pp_conn *c)
{
    server *s = pp_conn_data(c);

    s->opened++;
}

static void
srv_closed(pp_conn *c, int err)
{
    server *s = pp_conn_data(c);

    s->closed++;
    s->last_err = err;
    if (err)
        s->errors++;
}

static size_t
echo_read(pp_conn *c, const char *data, size_t len)
{
    ASSERT_GE(pp_conn_write(c, data, len), 0);
    return len;
}

static const pp_conn_handler echo_handler = {
    .on_open = srv_opened,
    .on_read = echo_read,
    .on_close = srv_closed,
};

/* ---- a raw client, read by a pp_io ------------------------------------- */

typedef struct sink {
    pp_io io;
    int fd;
    pp_buf got;
    int eof;
    int err;
    int paused;              /* a slow reader: reads nothing meanwhile */
} sink;

static void
sink_drain(sink *s)
{
    char buf[65536];
    ssize_t n;

    while (!s->paused && s->io.registered) {
        n = read(s->fd, buf, sizeof(buf));
        if (n > 0) {
            ASSERT_EQ(pp_buf_put(&s->got, buf, (size_t)n), 0);
        } else if (n == 0) {
            s->eof = 1;
            pp_io_unregister(loop, &s->io);
        } else {
            if (errno != EAGAIN) {
                s->err = -errno;
                pp_io_unregister(loop, &s->io);
            }
            return;
        }
    }
}

static void
sink_event(pp_loop *l, pp_io *io, unsigned events)
{
    (void)l;
    (void)events;
    sink_drain(io->data);
}

/* Connects to srv (blocking until connected) and starts reading.  (No
 * small SO_RCVBUF for slow readers: set after connect, below the loopback
 * MSS, it stalls TCP in zero-window probing.) */
static void
sink_connect(sink *s)
{
    struct pollfd p;

    memset(s, 0, sizeof(*s));
    s->fd = pp_net_connect_tcp("127.0.0.1", srv.port, PP_NET_NUMERIC);
    ASSERT_GE(s->fd, 0);
    p.fd = s->fd;
    p.events = POLLOUT;
    ASSERT_EQ(poll(&p, 1, 5000), 1);
    ASSERT_EQ(pp_net_socket_error(s->fd), 0);
    ASSERT_EQ(pp_io_register(loop, &s->io, s->fd, PP_READABLE, sink_event, s),
              0);
}

static void
sink_send(sink *s, const char *data)
{
    size_t n = strlen(data);

    ASSERT_EQ(write(s->fd, data, n), (ssize_t)n);
}

static void
sink_close(sink *s)
{
    pp_io_unregister(loop, &s->io);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    pp_buf_free(&s->got);
}

static int
sink_equals(const sink *s, const void *data, size_t n)
{
    return s->got.len == n && memcmp(s->got.data, data, n) == 0;
}

/* ---- 1,000 concurrent echo clients ------------------------------------- */

#define NCLIENTS 1000
#define ROUNDS 3
#define MAXMSG 6000

typedef struct echo_client {
    int id;
    int round;
    int opened;
    int closed;
    int err;
    size_t msg_len;
    size_t got;
} echo_client;

static echo_client clients[NCLIENTS];
static int clients_closed;

static unsigned char
pattern(int id, int round, size_t i)
{
    return (unsigned char)(id * 7 + round * 13 + (int)(i * 31));
}

static void
client_send(pp_conn *c, echo_client *e)
{
    unsigned char buf[MAXMSG];
    size_t i;

    for (i = 0; i < e->msg_len; i++)
        buf[i] = pattern(e->id, e->round, i);
    ASSERT_GE(pp_conn_write(c, buf, e->msg_len), 0);
}

static void
client_opened(pp_conn *c)
{
    echo_client *e = pp_conn_data(c);

    e->opened = 1;
    client_send(c, e);
}

static size_t
client_read(pp_conn *c, const char *data, size_t len)
{
    echo_client *e = pp_conn_data(c);
    size_t i;

    ASSERT_LE(e->got + len, e->msg_len);
    for (i = 0; i < len; i++) {
        if ((unsigned char)data[i] != pattern(e->id, e->round, e->got + i))
            PP_TEST_FAIL("client %d round %d byte %zu differs", e->id,
                         e->round, e->got + i);
    }
    e->got += len;
    if (e->got == e->msg_len) {
        e->got = 0;
        if (++e->round == ROUNDS)
            pp_conn_close(c);
        else
            client_send(c, e);
    }
    return len;
}

static void
client_closed(pp_conn *c, int err)
{
    echo_client *e = pp_conn_data(c);

    e->closed = 1;
    e->err = err;
    clients_closed++;
}

static const pp_conn_handler client_handler = {
    .on_open = client_opened,
    .on_read = client_read,
    .on_close = client_closed,
};

static void
raise_fd_limit(rlim_t want)
{
    struct rlimit rl;

    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < want)
        PP_TEST_FAIL("RLIMIT_NOFILE is %ju, need %ju",
                     (uintmax_t)rl.rlim_cur, (uintmax_t)want);
}

static void
test_echo_1000_clients(void)
{
    pp_conn_group cg;
    int i;

    raise_fd_limit(2 * NCLIENTS + 64);
    setup();
    server_start(NULL, &echo_handler);
    ASSERT_EQ(pp_conn_group_init(&cg, loop, NULL), 0);
    clients_closed = 0;
    for (i = 0; i < NCLIENTS; i++) {
        pp_conn *c;
        int fd;

        clients[i] = (echo_client){.id = i};
        clients[i].msg_len = 1 + (size_t)(i * 37) % MAXMSG;
        fd = pp_net_connect_tcp("127.0.0.1", srv.port, PP_NET_NUMERIC);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(pp_conn_open(&cg, fd, PP_CONN_CONNECTING, &client_handler,
                               &clients[i], &c), 0);
    }
    ASSERT_EQ(cg.count, NCLIENTS);
    RUN_UNTIL(clients_closed == NCLIENTS && srv.closed == NCLIENTS);
    for (i = 0; i < NCLIENTS; i++) {
        ASSERT_EQ(clients[i].opened, 1);
        ASSERT_EQ(clients[i].round, ROUNDS);
        ASSERT_EQ(clients[i].err, 0);
    }
    ASSERT_EQ(srv.opened, NCLIENTS);
    ASSERT_EQ(srv.errors, 0);
    ASSERT_EQ(srv.g.stats.accepted, NCLIENTS);
    ASSERT_EQ(cg.stats.bytes_written, srv.g.stats.bytes_read);
    ASSERT_EQ(srv.g.stats.bytes_written, srv.g.stats.bytes_read);
    printf("# %d clients: server %llu reads, %llu writes; client %llu "
           "writes\n", NCLIENTS, (unsigned long long)srv.g.stats.read_calls,
           (unsigned long long)srv.g.stats.write_calls,
           (unsigned long long)cg.stats.write_calls);
    group_done(&cg);
    server_stop();
    teardown();
}

/* ---- writev coalescing -------------------------------------------------- */

static uint64_t calls_before, calls_after;
static int refs_released;
static char ref_piece[] = "REF-PIECE|";

static void
count_release(void *ctx)
{
    (void)ctx;
    refs_released++;
}

/* One callback, 100 small writes and 10 caller-owned pieces: one sendmsg. */
static size_t
burst_read(pp_conn *c, const char *data, size_t len)
{
    char piece[16];
    int i;

    (void)data;
    calls_before = pp_conn_get_group(c)->stats.write_calls;
    for (i = 0; i < 100; i++) {
        snprintf(piece, sizeof(piece), "%09d|", i);
        ASSERT_EQ(pp_conn_write(c, piece, 10), 0);
        if (i % 10 == 9)
            ASSERT_EQ(pp_conn_write_ref(c, ref_piece, 10, count_release,
                                        NULL), 0);
    }
    ASSERT_EQ(pp_conn_queued(c), 1100);
    ASSERT_EQ(pp_conn_mark(c, 1), 0);
    return len;
}

static void
burst_sent(pp_conn *c, uint64_t id)
{
    ASSERT_EQ(id, 1);
    calls_after = pp_conn_get_group(c)->stats.write_calls;
    ASSERT_EQ(pp_conn_queued(c), 0);
}

static const pp_conn_handler burst_handler = {
    .on_open = srv_opened,
    .on_read = burst_read,
    .on_sent = burst_sent,
    .on_close = srv_closed,
};

static void
test_writev_coalescing(void)
{
    char want[1200], *p = want;
    sink s;
    int i;

    setup();
    server_start(NULL, &burst_handler);
    sink_connect(&s);
    calls_after = 0;
    refs_released = 0;
    sink_send(&s, "go");
    RUN_UNTIL(calls_after != 0);
    ASSERT_EQ(calls_after - calls_before, 1);
    ASSERT_EQ(refs_released, 10);
    for (i = 0; i < 100; i++) {
        p += sprintf(p, "%09d|", i);
        if (i % 10 == 9)
            p += sprintf(p, "%s", ref_piece);
    }
    RUN_UNTIL(s.got.len >= 1100);
    ASSERT_TRUE(sink_equals(&s, want, 1100));
    sink_close(&s);
    RUN_UNTIL(srv.closed == 1);
    server_stop();
    teardown();
}

/* ---- sendfile ---------------------------------------------------------- */

#define FILE_SIZE (1024 * 1024)

static int file_fd = -1, file_fd2 = -1;
static char *file_data;

static void
make_file(void)
{
    char path[] = "/tmp/pp_conn_file_XXXXXX";
    size_t i;

    file_data = malloc(FILE_SIZE);
    ASSERT_NOT_NULL(file_data);
    for (i = 0; i < FILE_SIZE; i++)
        file_data[i] = (char)(i * 131 + (i >> 9));
    file_fd = mkstemp(path);
    ASSERT_GE(file_fd, 0);
    unlink(path);
    ASSERT_EQ(write(file_fd, file_data, FILE_SIZE), FILE_SIZE);
}

static void
file_open(pp_conn *c)
{
    pp_conn_file f = {
        .fd = file_fd, .offset = 1000, .count = 500000,
        .before = "HDR", .before_len = 3, .after = "TRL", .after_len = 3,
    };
    pp_conn_file tail = {
        .fd = file_fd2, .flags = PP_FILE_CLOSE, .offset = FILE_SIZE - 576,
        .count = PP_FILE_TO_END,
    };
    pp_conn_file bad = {.fd = file_fd, .offset = FILE_SIZE + 1,
                        .count = PP_FILE_TO_END};

    srv_opened(c);
    ASSERT_EQ(pp_conn_sendfile(c, &bad), -EINVAL);
    ASSERT_GE(pp_conn_write(c, "A", 1), 0);
    ASSERT_GE(pp_conn_sendfile(c, &f), 0);
    ASSERT_GE(pp_conn_write(c, "Z", 1), 0);
    ASSERT_GE(pp_conn_sendfile(c, &tail), 0);
    ASSERT_EQ(pp_conn_queued(c), 1 + 3 + 500000 + 3 + 1 + 576);
    pp_conn_close(c);        /* after everything queued is sent */
    ASSERT_EQ(pp_conn_write(c, "late", 4), -EPIPE);
}

static const pp_conn_handler file_handler = {
    .on_open = file_open,
    .on_close = srv_closed,
};

/* The file is shorter than the count: the connection closes with -EIO
 * after sending what there was. */
static void
short_file_open(pp_conn *c)
{
    pp_conn_file f = {.fd = file_fd, .offset = FILE_SIZE - 100,
                      .count = 200};

    srv_opened(c);
    ASSERT_GE(pp_conn_sendfile(c, &f), 0);
}

static const pp_conn_handler short_file_handler = {
    .on_open = short_file_open,
    .on_close = srv_closed,
};

static void
test_sendfile(void)
{
    pp_buf want = PP_BUF_INIT;
    sink s;

    make_file();
    file_fd2 = dup(file_fd);
    ASSERT_GE(file_fd2, 0);
    setup();
    server_start(NULL, &file_handler);
    sink_connect(&s);
    RUN_UNTIL(s.eof);
    ASSERT_EQ(srv.closed, 1);
    ASSERT_EQ(srv.last_err, 0);
    pp_buf_put(&want, "A", 1);
    pp_buf_put(&want, "HDR", 3);
    pp_buf_put(&want, file_data + 1000, 500000);
    pp_buf_put(&want, "TRL", 3);
    pp_buf_put(&want, "Z", 1);
    pp_buf_put(&want, file_data + FILE_SIZE - 576, 576);
    ASSERT_EQ(s.got.len, want.len);
    ASSERT_TRUE(memcmp(s.got.data, want.data, want.len) == 0);
    ASSERT_GE(srv.g.stats.sendfile_calls, 2);
    /* PP_FILE_CLOSE closed the duplicate; the original stays open. */
    ASSERT_EQ(fcntl(file_fd2, F_GETFD), -1);
    ASSERT_NE(fcntl(file_fd, F_GETFD), -1);
    sink_close(&s);
    pp_buf_free(&want);
    server_stop();

    server_start(NULL, &short_file_handler);
    sink_connect(&s);
    RUN_UNTIL(srv.closed == 1);
    ASSERT_EQ(srv.last_err, -EIO);
    RUN_UNTIL(s.eof || s.err);
    ASSERT_TRUE(s.got.len == 100 || s.err);
    sink_close(&s);
    server_stop();
    teardown();
    close(file_fd);
    free(file_data);
}

/* ---- back-pressure ------------------------------------------------------ */

/* More than loopback TCP buffers in the kernel (up to tcp_wmem's 4 MiB on
 * the sending side) while the reader reads nothing. */
#define FLOOD_TOTAL (16 * 1024 * 1024)
#define FLOOD_CHUNK 16384

static struct {
    int one_at_a_time;       /* drain phase: a chunk per completed send */
    size_t produced;
    size_t max_queued;
    int pauses;
    int resumes;
    int paused;
    size_t read_bytes;
} flood;

static char flood_chunk[FLOOD_CHUNK];

static void
flood_produce(pp_conn *c)
{
    while (!flood.paused && flood.produced < FLOOD_TOTAL) {
        int rc = pp_conn_write(c, flood_chunk, FLOOD_CHUNK);

        ASSERT_GE(rc, 0);
        flood.produced += FLOOD_CHUNK;
        if (pp_conn_queued(c) > flood.max_queued)
            flood.max_queued = pp_conn_queued(c);
        /* 1 and on_pause_writing come together. */
        ASSERT_EQ(rc, flood.paused);
        if (flood.one_at_a_time) {
            ASSERT_EQ(pp_conn_mark(c, flood.produced), 0);
            break;
        }
    }
    if (flood.produced >= FLOOD_TOTAL)
        pp_conn_close(c);
}

static void
flood_open(pp_conn *c)
{
    srv_opened(c);
    flood_produce(c);
}

static void
flood_pause(pp_conn *c)
{
    (void)c;
    flood.pauses++;
    flood.paused = 1;
}

static void
flood_resume(pp_conn *c)
{
    flood.resumes++;
    flood.paused = 0;
    ASSERT_LE(pp_conn_queued(c), 16 * 1024);
    flood_produce(c);
}

/* A producer that refilled past the mark at every resume would never let
 * the connection read again; in the drain phase it waits for each chunk to
 * reach the kernel instead (the chargen pattern). */
static void
flood_sent(pp_conn *c, uint64_t id)
{
    (void)id;
    flood_produce(c);
}

static size_t
flood_read(pp_conn *c, const char *data, size_t len)
{
    (void)c;
    (void)data;
    /* Reading is paused while the output is above the high-water mark. */
    ASSERT_EQ(flood.paused, 0);
    flood.read_bytes += len;
    return len;
}

static const pp_conn_handler flood_handler = {
    .on_open = flood_open,
    .on_read = flood_read,
    .on_sent = flood_sent,
    .on_pause_writing = flood_pause,
    .on_resume_writing = flood_resume,
    .on_close = srv_closed,
};

static void
test_slow_reader_backpressure(void)
{
    char input[1000];
    uint64_t written;
    size_t i;
    sink s;

    for (i = 0; i < FLOOD_CHUNK; i++)
        flood_chunk[i] = (char)(i % 251);
    memset(&flood, 0, sizeof(flood));
    memset(input, 'i', sizeof(input));
    setup();
    server_start(NULL, &flood_handler);
    sink_connect(&s);
    s.paused = 1;                        /* the client reads nothing */
    RUN_UNTIL(srv.opened == 1 && flood.paused);
    /* Until the kernel's buffers are full too and nothing moves. */
    do {
        written = srv.g.stats.bytes_written;
        run_for(30);
    } while (srv.g.stats.bytes_written != written);
    ASSERT_EQ(flood.paused, 1);
    ASSERT_LT(flood.produced, FLOOD_TOTAL);
    /* Input sent now is not delivered while the server is paused. */
    ASSERT_EQ(write(s.fd, input, sizeof(input)), (ssize_t)sizeof(input));
    run_for(50);
    ASSERT_EQ(flood.read_bytes, 0);

    s.paused = 0;                        /* now it reads */
    flood.one_at_a_time = 1;
    sink_drain(&s);
    RUN_UNTIL(s.eof);
    ASSERT_EQ(srv.closed, 1);
    ASSERT_EQ(srv.last_err, 0);
    ASSERT_EQ(s.got.len, FLOOD_TOTAL);
    for (i = 0; i < s.got.len; i += 4093)
        ASSERT_EQ(s.got.data[i], (unsigned char)((i % FLOOD_CHUNK) % 251));
    ASSERT_GE(flood.pauses, 1);
    ASSERT_EQ(flood.resumes, flood.pauses);
    ASSERT_EQ(flood.read_bytes, sizeof(input));
    /* The producer stops at the first write past the mark. */
    ASSERT_LE(flood.max_queued, 64 * 1024 + FLOOD_CHUNK);
    ASSERT_EQ(srv.g.stats.write_pauses, (uint64_t)flood.pauses);
    printf("# %d pauses; most queued %zu bytes\n", flood.pauses,
           flood.max_queued);
    sink_close(&s);
    server_stop();
    teardown();
}

/* ---- the peer vanishes mid-send ----------------------------------------- */

#define NREFS 64
#define REF_SIZE 65536

static char *big_ref;

static void
vanish_open(pp_conn *c)
{
    char *copy = malloc(1 << 20);
    int i;

    srv_opened(c);
    memset(copy, 'c', 1 << 20);
    for (i = 0; i < NREFS; i++)
        ASSERT_GE(pp_conn_write_ref(c, big_ref, REF_SIZE, count_release,
                                    NULL), 0);
    ASSERT_GE(pp_conn_write(c, copy, 1 << 20), 0);
    free(copy);
}

static const pp_conn_handler vanish_handler = {
    .on_open = vanish_open,
    .on_read = echo_read,
    .on_close = srv_closed,
};

static void
vanish(int rst)
{
    sink s;

    refs_released = 0;
    server_start(NULL, &vanish_handler);
    sink_connect(&s);
    s.paused = 1;
    RUN_UNTIL(srv.opened == 1 && srv.g.stats.bytes_written > 0);
    run_for(10);
    ASSERT_EQ(srv.closed, 0);
    if (rst) {
        struct linger lg = {1, 0};

        ASSERT_EQ(setsockopt(s.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)),
                  0);
    }
    /* Either way the client leaves unread data behind: the kernel sends a
     * reset. */
    sink_close(&s);
    RUN_UNTIL(srv.closed == 1);
    ASSERT_TRUE(srv.last_err == -ECONNRESET || srv.last_err == -EPIPE);
    ASSERT_EQ(refs_released, NREFS);
    server_stop();
}

static void
test_peer_reset_mid_send(void)
{
    big_ref = malloc(REF_SIZE);
    memset(big_ref, 'r', REF_SIZE);
    setup();
    vanish(1);               /* SO_LINGER 0: an explicit RST */
    vanish(0);               /* a plain close with unread data */
    teardown();
    free(big_ref);
}

/* The client closes halfway through a message. */
static size_t
lines_read(pp_conn *c, const char *data, size_t len);

static char lines[8][16];
static int nlines;
static char tail_at_eof[16];

static void
lines_eof(pp_conn *c)
{
    size_t n;
    const char *t = pp_conn_unconsumed(c, &n);

    ASSERT_LT(n, sizeof(tail_at_eof));
    memcpy(tail_at_eof, t, n);
    tail_at_eof[n] = '\0';
    pp_conn_close(c);
}

/* Consumes whole lines only; the rest waits for more input. */
static size_t
lines_read(pp_conn *c, const char *data, size_t len)
{
    size_t used = 0, i;

    (void)c;
    for (i = 0; i < len; i++) {
        if (data[i] == '\n') {
            ASSERT_LT(nlines, 8);
            ASSERT_LT(i - used, sizeof(lines[0]));
            memcpy(lines[nlines], data + used, i - used);
            lines[nlines][i - used] = '\0';
            nlines++;
            used = i + 1;
        }
    }
    return used;
}

static const pp_conn_handler lines_handler = {
    .on_open = srv_opened,
    .on_read = lines_read,
    .on_eof = lines_eof,
    .on_close = srv_closed,
};

static void
test_partial_input(void)
{
    pp_conn_config cfg;
    char big[2000];
    sink s;

    nlines = 0;
    setup();
    server_start(NULL, &lines_handler);
    sink_connect(&s);
    sink_send(&s, "ab");
    run_for(20);
    ASSERT_EQ(nlines, 0);
    sink_send(&s, "c\nde");
    RUN_UNTIL(nlines == 1);
    sink_send(&s, "f\ngh");
    RUN_UNTIL(nlines == 2);
    ASSERT_TRUE(strcmp(lines[0], "abc") == 0);
    ASSERT_TRUE(strcmp(lines[1], "def") == 0);
    shutdown(s.fd, SHUT_WR);             /* EOF mid-line */
    RUN_UNTIL(srv.closed == 1);
    ASSERT_EQ(srv.last_err, 0);
    ASSERT_TRUE(strcmp(tail_at_eof, "gh") == 0);
    RUN_UNTIL(s.eof);
    sink_close(&s);
    server_stop();

    /* More unconsumed input than read_max: -ENOBUFS. */
    pp_conn_config_default(&cfg);
    cfg.read_max = 1024;
    server_start(&cfg, &lines_handler);
    sink_connect(&s);
    memset(big, 'x', sizeof(big));
    ASSERT_EQ(write(s.fd, big, sizeof(big)), (ssize_t)sizeof(big));
    RUN_UNTIL(srv.closed == 1);
    ASSERT_EQ(srv.last_err, -ENOBUFS);
    sink_close(&s);
    server_stop();
    teardown();
}

/* ---- half-close --------------------------------------------------------- */

static struct {
    pp_buf got;
    int closed;
    int err;
} hc;

static void
hc_open(pp_conn *c)
{
    ASSERT_GE(pp_conn_write(c, "hello", 5), 0);
    ASSERT_EQ(pp_conn_shutdown(c), 0);
    ASSERT_EQ(pp_conn_write(c, "more", 4), -EPIPE);
}

static size_t
hc_read(pp_conn *c, const char *data, size_t len)
{
    (void)c;
    pp_buf_put(&hc.got, data, len);
    return len;
}

static void
hc_close(pp_conn *c, int err)
{
    (void)c;
    hc.closed = 1;
    hc.err = err;
}

static const pp_conn_handler hc_client = {
    .on_open = hc_open,
    .on_read = hc_read,
    .on_close = hc_close,
};

/* The server answers EOF with a last word, then shuts its side too. */
static void
bye_eof(pp_conn *c)
{
    ASSERT_GE(pp_conn_write(c, "bye", 3), 0);
    ASSERT_EQ(pp_conn_shutdown(c), 0);
}

static const pp_conn_handler bye_handler = {
    .on_open = srv_opened,
    .on_read = echo_read,
    .on_eof = bye_eof,
    .on_close = srv_closed,
};

static void
test_half_close(void)
{
    pp_conn_group cg;
    pp_conn *c;
    sink s;
    int fd;

    setup();
    /* A pp_conn client sends, shuts down its side, and still gets the
     * echo; both ends then close with no error. */
    server_start(NULL, &echo_handler);
    memset(&hc, 0, sizeof(hc));
    ASSERT_EQ(pp_conn_group_init(&cg, loop, NULL), 0);
    fd = pp_net_connect_tcp("127.0.0.1", srv.port, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pp_conn_open(&cg, fd, PP_CONN_CONNECTING, &hc_client, NULL, &c),
              0);
    RUN_UNTIL(hc.closed && srv.closed == 1);
    ASSERT_EQ(hc.err, 0);
    ASSERT_EQ(srv.last_err, 0);
    ASSERT_EQ(hc.got.len, 5);
    ASSERT_TRUE(memcmp(hc.got.data, "hello", 5) == 0);
    pp_buf_free(&hc.got);
    group_done(&cg);
    server_stop();

    /* Data and FIN land before the server polls: one edge for both, and
     * the short read must not hide the EOF. */
    server_start(NULL, &echo_handler);
    sink_connect(&s);
    RUN_UNTIL(srv.opened == 1);
    sink_send(&s, "abc");
    ASSERT_EQ(shutdown(s.fd, SHUT_WR), 0);
    sleep_ms(20);
    RUN_UNTIL(s.eof);
    ASSERT_TRUE(sink_equals(&s, "abc", 3));
    RUN_UNTIL(srv.closed == 1);
    ASSERT_EQ(srv.last_err, 0);
    sink_close(&s);
    server_stop();

    /* A raw client half-closes; the server writes after EOF. */
    server_start(NULL, &bye_handler);
    sink_connect(&s);
    sink_send(&s, "abc");
    ASSERT_EQ(shutdown(s.fd, SHUT_WR), 0);
    RUN_UNTIL(s.eof);
    ASSERT_TRUE(sink_equals(&s, "abcbye", 6));
    RUN_UNTIL(srv.closed == 1);
    ASSERT_EQ(srv.last_err, 0);
    sink_close(&s);
    server_stop();
    teardown();
}

/* ---- markers: send_complete and a generator ---------------------------- */

static uint64_t sent_ids[16];
static int nsent;

static void
gen_open(pp_conn *c)
{
    srv_opened(c);
    ASSERT_EQ(pp_conn_write(c, "a", 1), 0);
    ASSERT_EQ(pp_conn_mark(c, 1), 0);
    ASSERT_EQ(pp_conn_write(c, "b", 1), 0);
    ASSERT_EQ(pp_conn_mark(c, 2), 0);
    ASSERT_EQ(pp_conn_mark(c, 3), 0);
    ASSERT_EQ(nsent, 0);     /* never from inside pp_conn_mark */
}

/* Each completed send feeds the next, until 10. */
static void
gen_sent(pp_conn *c, uint64_t id)
{
    char b = (char)('a' + id);

    sent_ids[nsent++] = id;
    if (id >= 3 && id < 10) {
        ASSERT_EQ(pp_conn_write(c, &b, 1), 0);
        ASSERT_EQ(pp_conn_mark(c, id + 1), 0);
    } else if (id == 10) {
        pp_conn_close(c);
    }
}

static const pp_conn_handler gen_handler = {
    .on_open = gen_open,
    .on_sent = gen_sent,
    .on_close = srv_closed,
};

static void
test_markers(void)
{
    sink s;
    int i;

    nsent = 0;
    setup();
    server_start(NULL, &gen_handler);
    sink_connect(&s);
    RUN_UNTIL(s.eof);
    ASSERT_EQ(nsent, 10);
    for (i = 0; i < 10; i++)
        ASSERT_EQ(sent_ids[i], i + 1);
    ASSERT_TRUE(sink_equals(&s, "abdefghij", 9));
    sink_close(&s);
    server_stop();
    teardown();
}

/* ---- idle timeout ------------------------------------------------------- */

static uint64_t closed_at;

static void
idle_closed(pp_conn *c, int err)
{
    srv_closed(c, err);
    closed_at = pp_now_ns();
}

static const pp_conn_handler idle_handler = {
    .on_open = srv_opened,
    .on_read = echo_read,
    .on_close = idle_closed,
};

static void
test_idle_timeout(void)
{
    pp_conn_config cfg;
    uint64_t start, last;
    sink s;
    int i;

    pp_conn_config_default(&cfg);
    cfg.idle_timeout_ns = 150 * MS;
    setup();
    server_start(&cfg, &idle_handler);
    start = pp_now_ns();
    sink_connect(&s);
    RUN_UNTIL(srv.closed == 1);
    ASSERT_EQ(srv.last_err, -ETIMEDOUT);
    ASSERT_GE(closed_at - start, 150 * MS);
    RUN_UNTIL(s.eof);
    sink_close(&s);

    /* Activity pushes the deadline back. */
    sink_connect(&s);
    RUN_UNTIL(srv.opened == 2);
    last = pp_now_ns();
    for (i = 0; i < 5; i++) {
        run_for(20);
        ASSERT_EQ(srv.closed, 1);
        sink_send(&s, "x");
        last = pp_now_ns();
    }
    RUN_UNTIL(srv.closed == 2);
    ASSERT_EQ(srv.last_err, -ETIMEDOUT);
    ASSERT_GE(closed_at - last, 150 * MS);
    RUN_UNTIL(s.eof);
    ASSERT_EQ(s.got.len, 5);
    sink_close(&s);
    server_stop();
    teardown();
}

/* ---- max_conns ---------------------------------------------------------- */

static void
test_max_conns(void)
{
    pp_conn_config cfg;
    sink s[3];

    pp_conn_config_default(&cfg);
    cfg.max_conns = 2;
    setup();
    server_start(&cfg, &echo_handler);
    sink_connect(&s[0]);
    sink_connect(&s[1]);
    sink_connect(&s[2]);
    RUN_UNTIL(srv.opened == 2);
    run_for(50);
    ASSERT_EQ(srv.opened, 2);            /* the third waits in the backlog */
    ASSERT_EQ(srv.g.count, 2);
    sink_close(&s[0]);                   /* EOF: its server side closes */
    RUN_UNTIL(srv.opened == 3);
    ASSERT_EQ(srv.closed, 1);
    sink_send(&s[2], "hi");
    RUN_UNTIL(s[2].got.len == 2);
    sink_close(&s[1]);
    sink_close(&s[2]);
    RUN_UNTIL(srv.closed == 3);
    server_stop();
    teardown();
}

/* ---- pause_reading / resume_reading ------------------------------------ */

static pp_conn *paused_conn;
static size_t paused_got;

static size_t
pause_after_first(pp_conn *c, const char *data, size_t len)
{
    (void)data;
    paused_got += len;
    paused_conn = c;
    if (paused_got == 3)
        pp_conn_pause_reading(c);
    return len;
}

static const pp_conn_handler pause_handler = {
    .on_open = srv_opened,
    .on_read = pause_after_first,
    .on_close = srv_closed,
};

static void
test_pause_resume_reading(void)
{
    sink s;

    paused_got = 0;
    setup();
    server_start(NULL, &pause_handler);
    sink_connect(&s);
    sink_send(&s, "one");
    RUN_UNTIL(paused_got == 3);
    sink_send(&s, "two");
    run_for(30);
    ASSERT_EQ(paused_got, 3);
    /* No new edge will come for "two": resuming must read it anyway. */
    pp_conn_resume_reading(paused_conn);
    RUN_UNTIL(paused_got == 6);
    sink_close(&s);
    RUN_UNTIL(srv.closed == 1);
    server_stop();
    teardown();
}

/* ---- connect failures, Unix sockets, close_all --------------------------- */

static void
test_connect_refused(void)
{
    pp_conn_group cg;
    pp_conn *c;
    int lfd, port, fd;

    setup();
    lfd = pp_net_listen_tcp("127.0.0.1", 0, 0, 0);
    port = pp_net_local_port(lfd);
    close(lfd);
    memset(&hc, 0, sizeof(hc));
    ASSERT_EQ(pp_conn_group_init(&cg, loop, NULL), 0);
    fd = pp_net_connect_tcp("127.0.0.1", port, 0);
    if (fd == -ECONNREFUSED) {
        printf("# skip: refused at once\n");
    } else {
        ASSERT_GE(fd, 0);
        ASSERT_EQ(pp_conn_open(&cg, fd, PP_CONN_CONNECTING, &hc_client, NULL,
                               &c), 0);
        RUN_UNTIL(hc.closed);
        ASSERT_EQ(hc.err, -ECONNREFUSED);
        ASSERT_EQ(cg.stats.opened, 0);
    }
    ASSERT_EQ(cg.count, 0);
    ASSERT_EQ(pp_conn_group_destroy(&cg), 0);
    teardown();
}

/* Connects and waits; all defaults (EOF closes it). */
static const pp_conn_handler quiet_client = {0};

static void
test_unix_echo_and_close_all(void)
{
    char path[64];
    pp_conn_group sg, cg;
    pp_acceptor acc;
    pp_conn *c;
    int lfd, fd, i;

    memset(&srv, 0, sizeof(srv));
    memset(&hc, 0, sizeof(hc));
    setup();
    snprintf(path, sizeof(path), "@pp_conn_test_%d", (int)getpid());
    lfd = pp_net_listen_unix(path, 0, 0);
    ASSERT_GE(lfd, 0);
    ASSERT_EQ(pp_conn_group_init(&sg, loop, NULL), 0);
    ASSERT_EQ(pp_acceptor_start(&acc, &sg, lfd, &echo_handler, &srv), 0);
    ASSERT_EQ(pp_conn_group_init(&cg, loop, NULL), 0);
    fd = pp_net_connect_unix(path, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pp_conn_open(&cg, fd, PP_CONN_CONNECTING, &hc_client, NULL, &c),
              0);
    RUN_UNTIL(hc.closed && srv.closed == 1);
    ASSERT_EQ(hc.err, 0);
    ASSERT_EQ(hc.got.len, 5);
    pp_buf_free(&hc.got);

    /* Five more, left open; the server closes them all at once. */
    for (i = 0; i < 5; i++) {
        fd = pp_net_connect_unix(path, 0);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(pp_conn_open(&cg, fd, PP_CONN_CONNECTING, &quiet_client,
                               NULL, &c), 0);
    }
    RUN_UNTIL(srv.opened == 6);
    pp_acceptor_stop(&acc);
    close(lfd);
    srv.errors = 0;
    pp_conn_group_close_all(&sg);
    ASSERT_EQ(pp_conn_group_destroy(&sg), -EBUSY);   /* still closing */
    RUN_UNTIL(sg.count == 0);
    ASSERT_EQ(srv.closed, 6);
    ASSERT_EQ(srv.errors, 0);
    ASSERT_EQ(pp_conn_group_destroy(&sg), 0);
    RUN_UNTIL(cg.count == 0);            /* the clients see EOF or a reset */
    ASSERT_EQ(pp_conn_group_destroy(&cg), 0);
    teardown();
}

/* ---- memory -------------------------------------------------------------- */

static void
test_chunk_cache_reuse(void)
{
    pp_chunk_cache cc;
    pp_arena a;
    void *p, *q;

    pp_chunk_cache_init(&cc, 0, 2);
    ASSERT_EQ(cc.chunk_size, (size_t)sysconf(_SC_PAGESIZE));
    pp_arena_init_cached(&a, &cc);
    p = pp_arena_alloc(&a, 100);
    ASSERT_NOT_NULL(p);
    pp_arena_release(&a);
    ASSERT_EQ(cc.count, 1);
    /* The next arena takes the same chunk back: no mmap. */
    pp_arena_init_cached(&a, &cc);
    q = pp_arena_alloc(&a, 100);
    ASSERT_PTR_EQ(p, q);
    ASSERT_EQ(cc.count, 0);
    /* A block bigger than the chunk size gets its own mapping, which is
     * not cached. */
    ASSERT_NOT_NULL(pp_arena_alloc(&a, 3 * cc.chunk_size));
    pp_arena_release(&a);
    ASSERT_EQ(cc.count, 1);
    pp_chunk_cache_drain(&cc);
    ASSERT_EQ(cc.count, 0);
    ASSERT_NULL(cc.free);
}

/* What one idle connection costs on the C side. */
static size_t idle_mem;

static void
measure_open(pp_conn *c)
{
    char *state = pp_conn_alloc(c, 256);

    ASSERT_NOT_NULL(state);
    memset(state, 0, 256);
    srv_opened(c);
    idle_mem = pp_conn_memory(c);
}

static const pp_conn_handler measure_handler = {
    .on_open = measure_open,
    .on_read = echo_read,
    .on_close = srv_closed,
};

static void
test_idle_connection_memory(void)
{
    sink s;
    size_t cached;

    setup();
    server_start(NULL, &measure_handler);
    sink_connect(&s);
    RUN_UNTIL(srv.opened == 1);
    /* The pp_conn and 256 owner bytes fit in one 1 KiB chunk. */
    ASSERT_EQ(idle_mem, 1024);
    cached = srv.g.chunks.count;
    sink_send(&s, "ping");
    RUN_UNTIL(s.got.len == 4);
    printf("# idle connection: %zu bytes of engine memory\n", idle_mem);
    sink_close(&s);
    RUN_UNTIL(srv.closed == 1);
    /* Its chunk went back to the cache, its block back to the pool. */
    ASSERT_EQ(srv.g.chunks.count, cached + 1);
    ASSERT_EQ(srv.g.live_blocks, srv.g.nfree_blocks);
    server_stop();
    teardown();
}

int
main(void)
{
    PP_TEST_BEGIN();
    /* sendfile(2) to a reset socket raises SIGPIPE (see pp_conn.h). */
    signal(SIGPIPE, SIG_IGN);
    RUN_TEST(test_chunk_cache_reuse);
    RUN_TEST(test_echo_1000_clients);
    RUN_TEST(test_writev_coalescing);
    RUN_TEST(test_sendfile);
    RUN_TEST(test_slow_reader_backpressure);
    RUN_TEST(test_peer_reset_mid_send);
    RUN_TEST(test_partial_input);
    RUN_TEST(test_half_close);
    RUN_TEST(test_markers);
    RUN_TEST(test_idle_timeout);
    RUN_TEST(test_max_conns);
    RUN_TEST(test_pause_resume_reading);
    RUN_TEST(test_connect_refused);
    RUN_TEST(test_unix_echo_and_close_all);
    RUN_TEST(test_idle_connection_memory);
    return PP_TEST_DONE();
}
