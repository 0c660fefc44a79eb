/* test_http.c -- the engine's HTTP/1.1 layer over loopback TCP: answers
 * and their heads, keep-alive, pipelining in order with late answers,
 * bodies (length, chunked, spilled to a file), 100-continue, HEAD, every
 * limit and refusal (414, 431, 413, 400 for ambiguous framing, 505), the
 * head, body and keep-alive timeouts, streamed answers, and drain.
 *
 * The server and raw clients share one loop, so the test sees exactly the
 * bytes on the wire. */
#include "pp_buf.h"
#include "pp_conn.h"
#include "pp_http.h"
#include "pp_net.h"
#include "pp_sync.h"
#include "pp_test.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MS PP_NS_PER_MS

static pp_loop *loop;

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
run_for(int ms)
{
    uint64_t end = pp_now_ns() + (uint64_t)ms * MS;

    while (pp_now_ns() < end)
        ASSERT_EQ(pp_loop_run_once(loop, 5), 0);
}

/* ---- the server ------------------------------------------------------------- */

static struct {
    pp_conn_group conns;
    pp_http_group http;
    pp_acceptor acc;
    int lfd, port;
    pp_http_request *held[16];
    int nheld;
    int requests;
    char last_body[256];
    uint64_t last_body_len;
    int last_body_fd;
} srv;

static void
answer(pp_http_request *req, int status, const char *body)
{
    pp_http_response r;

    pp_http_response_init(&r, status);
    r.content_type = "text/plain";
    r.content_type_len = 10;
    r.body = body;
    r.body_len = strlen(body);
    ASSERT_EQ(pp_http_respond(req, &r), 0);
}

static int
path_is(const pp_http_request *req, const char *p)
{
    return req->path_len == strlen(p) && memcmp(req->path, p, req->path_len) == 0;
}

static void
on_request(pp_http_conn *hc, pp_http_request *req)
{
    (void)hc;
    srv.requests++;
    if (path_is(req, "/late")) {
        pp_http_hold(req);
        srv.held[srv.nheld++] = req;
    } else if (path_is(req, "/body")) {
        char msg[64];
        srv.last_body_len = req->body_len;
        srv.last_body_fd = req->body_fd;
        if (req->body_fd < 0 && req->body_len < sizeof srv.last_body) {
            memcpy(srv.last_body, req->body, req->body_len);
            srv.last_body[req->body_len] = '\0';
        }
        snprintf(msg, sizeof msg, "got %llu", (unsigned long long)req->body_len);
        answer(req, 200, msg);
    } else if (path_is(req, "/stream")) {
        pp_http_response r;
        pp_http_response_init(&r, 200);
        r.flags = PP_HTTP_STREAM;
        ASSERT_EQ(pp_http_respond(req, &r), 0);
        ASSERT_EQ(pp_http_send(req, "abc", 3), 0);
        ASSERT_EQ(pp_http_send(req, "defgh", 5), 0);
        ASSERT_EQ(pp_http_end(req), 0);
    } else if (path_is(req, "/query")) {
        char msg[128];
        snprintf(msg, sizeof msg, "q=%.*s", (int)req->query_len, req->query);
        answer(req, 200, msg);
    } else {
        answer(req, 200, "hello");
    }
}

static const pp_http_handler handler = {.on_request = on_request};

static void
server_start(const pp_http_config *cfg)
{
    memset(&srv, 0, sizeof(srv));
    ASSERT_EQ(pp_loop_create(&loop), 0);
    ASSERT_EQ(pp_conn_group_init(&srv.conns, loop, NULL), 0);
    pp_http_group_init(&srv.http, &srv.conns, cfg, &handler, NULL);
    srv.lfd = pp_net_listen_tcp("127.0.0.1", 0, 128, PP_NET_NUMERIC);
    ASSERT_GE(srv.lfd, 0);
    srv.port = pp_net_local_port(srv.lfd);
    ASSERT_EQ(pp_acceptor_start(&srv.acc, &srv.conns, srv.lfd,
                                &pp_http_conn_handler, &srv.http), 0);
}

static void
server_stop(void)
{
    pp_acceptor_stop(&srv.acc);
    close(srv.lfd);
    pp_conn_group_close_all(&srv.conns);
    RUN_UNTIL(srv.conns.count == 0);
    ASSERT_EQ(srv.http.count, 0);
    for (int i = 0; i < srv.nheld; i++)
        pp_http_release(srv.held[i]);
    ASSERT_EQ(pp_conn_group_destroy(&srv.conns), 0);
    ASSERT_EQ(pp_loop_destroy(loop), 0);
}

/* ---- a raw client ------------------------------------------------------------- */

typedef struct client {
    pp_io io;
    int fd;
    pp_buf got;
    int eof;
} client;

static void
client_event(pp_loop *l, pp_io *io, unsigned events)
{
    client *c = io->data;
    char buf[65536];
    ssize_t n;

    (void)l;
    (void)events;
    for (;;) {
        n = read(c->fd, buf, sizeof buf);
        if (n > 0) {
            ASSERT_EQ(pp_buf_put(&c->got, buf, (size_t)n), 0);
            continue;
        }
        if (n == 0 || errno != EAGAIN) {
            c->eof = 1;
            pp_io_unregister(loop, &c->io);
        }
        return;
    }
}

static void
client_open(client *c)
{
    struct pollfd p;

    memset(c, 0, sizeof(*c));
    c->fd = pp_net_connect_tcp("127.0.0.1", srv.port, PP_NET_NUMERIC);
    ASSERT_GE(c->fd, 0);
    p.fd = c->fd;
    p.events = POLLOUT;
    ASSERT_EQ(poll(&p, 1, 5000), 1);
    ASSERT_EQ(pp_io_register(loop, &c->io, c->fd, PP_READABLE, client_event, c), 0);
}

static void
client_send_n(client *c, const char *data, size_t n)
{
    ASSERT_EQ(write(c->fd, data, n), (ssize_t)n);
}

static void
client_send(client *c, const char *data)
{
    client_send_n(c, data, strlen(data));
}

static void
client_close(client *c)
{
    if (c->io.registered)
        pp_io_unregister(loop, &c->io);
    close(c->fd);
    pp_buf_free(&c->got);
}

/* How many times s occurs in what the client got. */
static int
count(const client *c, const char *s)
{
    size_t n = strlen(s), i;
    int k = 0;

    for (i = 0; i + n <= c->got.len; i++)
        if (memcmp(c->got.data + i, s, n) == 0)
            k++;
    return k;
}

static int
has(const client *c, const char *s)
{
    return count(c, s) > 0;
}

/* Where s first occurs, or -1. */
static long
find(const client *c, const char *s)
{
    size_t n = strlen(s), i;

    for (i = 0; i + n <= c->got.len; i++)
        if (memcmp(c->got.data + i, s, n) == 0)
            return (long)i;
    return -1;
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

/* Sends raw, waits for the connection to close, expects one response with
 * that status line and nothing else. */
static void
expect_refusal(const char *raw, size_t n, const char *status_line)
{
    client c;

    client_open(&c);
    client_send_n(&c, raw, n);
    RUN_UNTIL(c.eof);
    if (!has(&c, status_line) || count(&c, "HTTP/1.1 ") != 1)
        PP_TEST_FAIL("for %.60s: wanted only %s, got:\n%.*s", raw, status_line,
                     (int)c.got.len, (char *)c.got.data);
    ASSERT_TRUE(has(&c, "Connection: close\r\n"));
    client_close(&c);
}

#define REFUSE(raw, status) expect_refusal(raw, sizeof(raw) - 1, status)

/* ---- tests ---------------------------------------------------------------------- */

static void
test_simple_get_and_keep_alive(void)
{
    client c;

    server_start(NULL);
    client_open(&c);
    client_send(&c, GET("/"));
    RUN_UNTIL(has(&c, "hello"));
    ASSERT_EQ(find(&c, "HTTP/1.1 200 OK\r\nServer: pyparallel\r\nDate: "), 0);
    ASSERT_TRUE(has(&c, " GMT\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"));
    ASSERT_TRUE(!has(&c, "Connection:"));
    client_send(&c, GET("/query?a=1&b=2"));
    RUN_UNTIL(has(&c, "q=a=1&b=2"));
    ASSERT_EQ(srv.requests, 2);
    ASSERT_TRUE(!c.eof);
    /* HTTP/1.0 without keep-alive: answered, then closed. */
    client_close(&c);
    client_open(&c);
    client_send(&c, "GET / HTTP/1.0\r\n\r\n");
    RUN_UNTIL(c.eof);
    ASSERT_TRUE(has(&c, "Connection: close\r\n") && has(&c, "hello"));
    client_close(&c);
    /* HTTP/1.0 with keep-alive stays open and says so. */
    client_open(&c);
    client_send(&c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    RUN_UNTIL(has(&c, "hello"));
    ASSERT_TRUE(has(&c, "Connection: keep-alive\r\n"));
    run_for(30);
    ASSERT_TRUE(!c.eof);
    /* Connection: close from a 1.1 client. */
    client_close(&c);
    client_open(&c);
    client_send(&c, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" GET("/never"));
    RUN_UNTIL(c.eof);
    ASSERT_EQ(count(&c, "HTTP/1.1 200"), 1);
    client_close(&c);
    server_stop();
}

static void
test_pipelining_in_order(void)
{
    client c;
    uint64_t writes;

    server_start(NULL);
    client_open(&c);
    /* 16 pipelined requests answered at once leave in one write. */
    {
        char all[16 * 40] = "";
        for (int i = 0; i < 16; i++)
            strcat(all, GET("/"));
        writes = srv.conns.stats.write_calls;
        client_send(&c, all);
        RUN_UNTIL(count(&c, "hello") == 16);
        ASSERT_EQ(srv.conns.stats.write_calls - writes, 1);
    }
    /* A late answer holds up the ones behind it, which keep their order. */
    pp_buf_free(&c.got);
    client_send(&c, GET("/late") GET("/query?one") GET("/late") GET("/query?two"));
    RUN_UNTIL(srv.nheld == 2);
    run_for(20);
    ASSERT_EQ(c.got.len, 0);
    answer(srv.held[1], 200, "second-late");
    run_for(20);
    ASSERT_EQ(c.got.len, 0);
    answer(srv.held[0], 200, "first-late");
    RUN_UNTIL(has(&c, "q=two"));
    ASSERT_TRUE(find(&c, "first-late") < find(&c, "q=one"));
    ASSERT_TRUE(find(&c, "q=one") < find(&c, "second-late"));
    ASSERT_TRUE(find(&c, "second-late") < find(&c, "q=two"));
    client_close(&c);
    server_stop();
}

static void
test_bodies(void)
{
    client c;
    pp_http_config cfg;

    pp_http_config_default(&cfg);
    cfg.body_spill = 64;
    server_start(&cfg);
    client_open(&c);
    client_send(&c, "POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world");
    RUN_UNTIL(has(&c, "got 11"));
    ASSERT_EQ(strcmp(srv.last_body, "hello world"), 0);
    /* Chunked, in pieces, with a trailer. */
    client_send(&c, "POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    run_for(20);
    client_send(&c, "lo\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n");
    RUN_UNTIL(has(&c, "got 11\r\n") || count(&c, "got 11") == 2);
    RUN_UNTIL(count(&c, "got 11") == 2);
    ASSERT_EQ(strcmp(srv.last_body, "hello world"), 0);
    /* A trailer that says "Connection: close" is dropped with the rest and
     * changes nothing for the next request (the parser once kept it and
     * then "parsed" the next head without reading a request line). */
    client_send(&c, "POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "3\r\nabc\r\n0\r\nConnection: close\r\n\r\n"
                    "POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nxy");
    RUN_UNTIL(has(&c, "got 2"));
    ASSERT_TRUE(has(&c, "got 3"));
    ASSERT_EQ(strcmp(srv.last_body, "xy"), 0);
    /* Past body_spill the body goes to a file. */
    {
        char big[300];
        memset(big, 'x', 200);
        snprintf(big + 200, 100, "%s", "");
        client_send(&c, "POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 200\r\n\r\n");
        client_send_n(&c, big, 200);
        RUN_UNTIL(has(&c, "got 200"));
        ASSERT_GE(srv.last_body_fd, 0);
    }
    /* Expect: 100-continue gets its interim answer before the body. */
    pp_buf_free(&c.got);
    client_send(&c, "POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    RUN_UNTIL(has(&c, "HTTP/1.1 100 Continue\r\n\r\n"));
    client_send(&c, "abc");
    RUN_UNTIL(has(&c, "got 3"));
    client_close(&c);
    server_stop();
}

static void
test_head_and_stream(void)
{
    client c;

    server_start(NULL);
    client_open(&c);
    client_send(&c, "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n" GET("/stream"));
    RUN_UNTIL(has(&c, "0\r\n\r\n"));
    /* HEAD: the length of the body, not the body. */
    ASSERT_TRUE(has(&c, "Content-Length: 5\r\n\r\nHTTP/1.1 200"));
    ASSERT_TRUE(!has(&c, "hello"));
    ASSERT_TRUE(has(&c, "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"));
    client_close(&c);
    /* HTTP/1.0 cannot take chunks: the close ends the body. */
    client_open(&c);
    client_send(&c, "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    RUN_UNTIL(c.eof);
    ASSERT_TRUE(has(&c, "Connection: close\r\n\r\nabcdefgh"));
    client_close(&c);
    server_stop();
}

static void
test_refusals(void)
{
    pp_http_config cfg;
    char *big;

    pp_http_config_default(&cfg);
    cfg.max_line = 100;
    cfg.max_head = 1000;
    cfg.max_headers = 5;
    cfg.max_body = 10;
    server_start(&cfg);
    /* Ambiguous framing: every shape is refused and nothing behind read. */
    REFUSE("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" GET("/smuggled"),
           "HTTP/1.1 400 ");
    REFUSE("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
           "HTTP/1.1 400 ");
    REFUSE("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5x\r\n\r\nhello", "HTTP/1.1 400 ");
    REFUSE("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", "HTTP/1.1 400 ");
    REFUSE("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
           "HTTP/1.1 400 ");
    REFUSE("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", "HTTP/1.1 400 ");
    REFUSE("GET / HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n", "HTTP/1.1 400 ");
    REFUSE("GET / HTTP/1.1\nHost: t\r\n\r\n", "HTTP/1.1 400 ");
    REFUSE("GET / HTTP/1.1\r\nHost: t\rX: y\r\n\r\n", "HTTP/1.1 400 ");
    REFUSE("GET / HTTP/1.1\r\nHost: t\r\nX: a\nY: b\r\n\r\n", "HTTP/1.1 400 ");
    REFUSE("GET / HTTP/1.1\r\n Host: t\r\n\r\n", "HTTP/1.1 400 ");
    REFUSE("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 ");                       /* no Host */
    REFUSE("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "HTTP/1.1 400 ");
    REFUSE("G@T / HTTP/1.1\r\nHost: t\r\n\r\n", "HTTP/1.1 400 ");
    REFUSE("GET / HTTP/2.0\r\nHost: t\r\n\r\n", "HTTP/1.1 505 ");
    REFUSE("GET / HTTP/1.1\r\nHost: t\r\nExpect: tea\r\n\r\n", "HTTP/1.1 417 ");
    REFUSE("GET / HTTP/1.1\r\nHost: t\r\nX\0Y: 1\r\n\r\n", "HTTP/1.1 400 ");
    /* Limits. */
    big = malloc(4000);
    memset(big, 'a', 4000);
    memcpy(big, "GET /", 5);
    expect_refusal(big, 300, "HTTP/1.1 414 ");
    {
        char head[2000];
        int n = snprintf(head, sizeof head, "GET / HTTP/1.1\r\nHost: t\r\nX: ");
        memset(head + n, 'b', sizeof head - (size_t)n);
        expect_refusal(head, sizeof head, "HTTP/1.1 431 ");
    }
    REFUSE("GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n", "HTTP/1.1 431 ");
    REFUSE("POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world", "HTTP/1.1 413 ");
    REFUSE("POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n",
           "HTTP/1.1 413 ");
    free(big);
    /* An answer owed before the refusal still goes first. */
    {
        client c;
        client_open(&c);
        client_send(&c, GET("/late") "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        RUN_UNTIL(srv.nheld == 1);
        run_for(20);
        ASSERT_EQ(c.got.len, 0);
        answer(srv.held[0], 200, "owed");
        RUN_UNTIL(c.eof);
        if (!(find(&c, "owed") >= 0 && find(&c, "owed") < find(&c, "HTTP/1.1 400")))
            fprintf(stderr, "got: %.*s\n", (int)c.got.len, (char *)c.got.data);
        ASSERT_TRUE(find(&c, "owed") >= 0 && find(&c, "owed") < find(&c, "HTTP/1.1 400"));
        client_close(&c);
    }
    /* Everyone else was served all along. */
    {
        client c;
        client_open(&c);
        client_send(&c, GET("/"));
        RUN_UNTIL(has(&c, "hello"));
        client_close(&c);
    }
    ASSERT_GE(srv.http.stats.rejected, 20);
    server_stop();
}

static void
test_timeouts(void)
{
    pp_http_config cfg;
    client c;
    uint64_t t0;

    pp_http_config_default(&cfg);
    cfg.head_timeout_ns = 150 * MS;
    cfg.body_timeout_ns = 150 * MS;
    cfg.keepalive_timeout_ns = 100 * MS;
    server_start(&cfg);
    /* Slowloris: a byte at a time does not extend the head's deadline. */
    client_open(&c);
    t0 = pp_now_ns();
    client_send(&c, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 8 && !c.eof; i++) {
        run_for(30);
        /* The server may have answered and closed since the last look:
         * then the write fails (EPIPE, ECONNRESET), which ends it too. */
        if (write(c.fd, "X", 1) != 1)
            break;
    }
    RUN_UNTIL(c.eof);
    ASSERT_TRUE(has(&c, "HTTP/1.1 408 "));
    ASSERT_LT(pp_now_ns() - t0, 600 * MS);
    client_close(&c);
    /* A body that stops coming. */
    client_open(&c);
    client_send(&c, "POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    RUN_UNTIL(c.eof);
    ASSERT_TRUE(has(&c, "HTTP/1.1 408 "));
    client_close(&c);
    /* Keep-alive: closed quietly after its timeout. */
    client_open(&c);
    client_send(&c, GET("/"));
    RUN_UNTIL(has(&c, "hello"));
    t0 = pp_now_ns();
    RUN_UNTIL(c.eof);
    ASSERT_EQ(count(&c, "HTTP/1.1 "), 1);
    ASSERT_GE(pp_now_ns() - t0, 50 * MS);
    client_close(&c);
    ASSERT_GE(srv.http.stats.timeouts, 2);
    server_stop();
}

static void
test_drain(void)
{
    client idle, busy;

    server_start(NULL);
    client_open(&idle);
    client_open(&busy);
    client_send(&idle, GET("/"));
    client_send(&busy, GET("/late"));
    RUN_UNTIL(has(&idle, "hello") && srv.nheld == 1);
    pp_http_group_drain(&srv.http);
    RUN_UNTIL(idle.eof);
    run_for(20);
    ASSERT_TRUE(!busy.eof);
    answer(srv.held[0], 200, "finished");
    RUN_UNTIL(busy.eof);
    ASSERT_TRUE(has(&busy, "Connection: close\r\n") && has(&busy, "finished"));
    client_close(&idle);
    client_close(&busy);
    server_stop();
}

static void
test_pipeline_limit(void)
{
    pp_http_config cfg;
    client c;
    char all[40 * 24] = "";

    pp_http_config_default(&cfg);
    cfg.max_pipeline = 4;
    server_start(&cfg);
    client_open(&c);
    for (int i = 0; i < 4; i++)
        strcat(all, GET("/late"));
    for (int i = 0; i < 20; i++)
        strcat(all, GET("/"));
    client_send(&c, all);
    RUN_UNTIL(srv.nheld == 4);
    run_for(20);
    ASSERT_EQ(srv.requests, 4);          /* the rest waits, unread */
    for (int i = 0; i < 4; i++)
        answer(srv.held[i], 200, "late");
    RUN_UNTIL(count(&c, "hello") == 20);
    ASSERT_EQ(count(&c, "HTTP/1.1 200"), 24);
    client_close(&c);
    server_stop();
}

int
main(void)
{
    PP_TEST_BEGIN();
    signal(SIGPIPE, SIG_IGN);
    RUN_TEST(test_simple_get_and_keep_alive);
    RUN_TEST(test_pipelining_in_order);
    RUN_TEST(test_bodies);
    RUN_TEST(test_head_and_stream);
    RUN_TEST(test_refusals);
    RUN_TEST(test_timeouts);
    RUN_TEST(test_drain);
    RUN_TEST(test_pipeline_limit);
    return PP_TEST_DONE();
}
