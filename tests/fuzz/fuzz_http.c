/* fuzz_http.c -- libFuzzer target for the engine's HTTP request path
 * (src/engine/http.c, http_response.c and llhttp beneath them).
 *
 * Each input is one connection's bytes: the first byte picks where the
 * input is split in two writes (so heads and bodies also arrive cut in
 * odd places), the rest goes to a pp_http connection over a socketpair,
 * then the peer shuts its side.  The owner answers every request -- at
 * once, streamed, or later from the loop -- as a real owner may.  Every
 * byte the server writes must belong to responses that start with
 * "HTTP/1.1 ".  Paths under /s go to a static mount of a small
 * temporary tree (a file, a directory with an index, a link out of the
 * root), so path decoding, ranges and conditionals are fuzzed too.  ASan
 * and UBSan catch the rest.
 *
 *   tests/fuzz/run.sh 60          # build and fuzz for 60 s
 */
#include "pp_conn.h"
#include "pp_http.h"
#include "pp_http_static.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static pp_loop *loop;
static pp_conn_group conns;
static pp_http_group http;
static pp_http_static *mount;
static int closed;
static pp_http_request *later[64];
static int nlater;

static void
on_request(pp_http_conn *hc, pp_http_request *req)
{
    pp_http_response r;

    (void)hc;
    pp_http_response_init(&r, 200);
    switch (req->seq % 3) {
    case 0:
        r.body = req->body_fd < 0 ? req->body : "file";
        r.body_len = req->body_fd < 0 ? (size_t)req->body_len : 4;
        (void)pp_http_respond(req, &r);
        break;
    case 1:
        r.flags = PP_HTTP_STREAM;
        (void)pp_http_respond(req, &r);
        (void)pp_http_send(req, req->path, req->path_len);
        (void)pp_http_end(req);
        break;
    default:
        if (nlater < 64) {
            pp_http_hold(req);
            later[nlater++] = req;
        } else {
            (void)pp_http_respond(req, &r);
        }
    }
}

static void
on_close(pp_http_conn *hc, int err)
{
    (void)hc;
    (void)err;
    closed = 1;
}

static const pp_http_handler handler = {.on_request = on_request, .on_close = on_close};

static void
answer_later(void)
{
    for (int i = 0; i < nlater; i++) {
        pp_http_response r;
        pp_http_response_init(&r, 201);
        r.body = "later";
        r.body_len = 5;
        (void)pp_http_respond(later[i], &r);
        pp_http_release(later[i]);
    }
    nlater = 0;
}

static size_t
drain(int fd, unsigned char *out, size_t have, size_t cap)
{
    ssize_t n;

    while ((n = read(fd, out + have, cap - have)) > 0) {
        have += (size_t)n;
        if (have == cap)
            have = 0;            /* only the start is checked */
    }
    return have;
}

static void
put_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    if ((f = fopen(path, "w")) == NULL)
        abort();
    fputs(text, f);
    fclose(f);
}

static void
static_tree(void)
{
    static char dir[] = "/tmp/pp-fuzz-static-XXXXXX";
    char path[512];

    if (mkdtemp(dir) == NULL)
        abort();
    put_file(dir, "a.txt", "0123456789");
    snprintf(path, sizeof path, "%s/docs", dir);
    if (mkdir(path, 0700) < 0)
        abort();
    put_file(path, "index.html", "<h1>docs</h1>");
    snprintf(path, sizeof path, "%s/out", dir);
    if (symlink("/etc/hostname", path) < 0 || pp_http_static_new(&mount, "/s", dir) < 0)
        abort();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    pp_http_config cfg;

    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    if (pp_loop_create(&loop) < 0 || pp_conn_group_init(&conns, loop, NULL) < 0)
        abort();
    pp_http_config_default(&cfg);
    cfg.max_line = 512;
    cfg.max_head = 2048;
    cfg.max_headers = 16;
    cfg.max_body = 8192;
    cfg.body_spill = 1024;
    cfg.max_pipeline = 8;
    pp_http_group_init(&http, &conns, &cfg, &handler, NULL);
    static_tree();
    pp_http_group_set_static(&http, &mount, 1);
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char out[1 << 16];
    int sv[2], i;
    size_t split, have = 0, off;
    pp_conn *c;

    if (size < 1 || size > 60000)
        return 0;
    split = data[0] % size;
    data++;
    size--;
    if (split > size)
        split = size;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    closed = 0;
    if (pp_conn_open(&conns, sv[0], 0, &pp_http_conn_handler, &http, &c) < 0)
        abort();
    off = 0;
    if (split && write(sv[1], data, split) < 0)
        abort();
    for (i = 0; i < 3; i++) {
        (void)pp_loop_run_once(loop, 0);
        have = drain(sv[1], out, have, sizeof out);
    }
    off = split;
    while (off < size) {
        ssize_t n = write(sv[1], data + off, size - off);
        if (n < 0) {
            if (errno != EAGAIN)
                break;
            (void)pp_loop_run_once(loop, 0);
            have = drain(sv[1], out, have, sizeof out);
            if (closed)
                break;
            continue;
        }
        off += (size_t)n;
    }
    shutdown(sv[1], SHUT_WR);
    for (i = 0; i < 200 && !closed; i++) {
        (void)pp_loop_run_once(loop, 0);
        if (i == 5)
            answer_later();
        have = drain(sv[1], out, have, sizeof out);
    }
    if (!closed) {
        answer_later();
        pp_conn_group_close_all(&conns);
        for (i = 0; i < 10 && !closed; i++)
            (void)pp_loop_run_once(loop, 0);
    }
    answer_later();
    (void)pp_loop_run_once(loop, 0);
    have = drain(sv[1], out, have, sizeof out);
    if (have >= 9 && have < sizeof out && memcmp(out, "HTTP/1.1 ", 9) != 0)
        abort();                 /* something other than a response went out */
    close(sv[1]);
    if (!closed)
        abort();
    return 0;
}
