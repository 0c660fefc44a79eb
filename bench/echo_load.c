/* echo_load.c -- load generator for echo servers (bench/bench_io.py builds it).
 *
 *   cc -O2 -std=c11 -Wall -Wextra -Werror -pthread -o echo_load bench/echo_load.c
 *
 * Plain epoll, no dependencies.  Every mode prints one JSON line on stdout
 * at the end (idle mode prints a "holding" line first); diagnostics go to
 * stderr.  Exit status 0 when the run happened (errors are counted in the
 * JSON), 1 when it could not (no connection, bad address), 2 for bad usage.
 *
 * Modes:
 *   rr       --conns C connections, each doing ping-pong of a --size byte
 *            message: send it, wait until the whole echo is back, compare it
 *            with what was sent, send the next one.  --warmup seconds are not
 *            counted, then round trips are counted for --seconds.  The
 *            connections are shared out over --threads threads, each with its
 *            own epoll.  Every message differs from the one before (a sliding
 *            window over a per-connection random pattern), so a stale or
 *            misplaced echo is caught: a mismatch counts as an error and ends
 *            that connection.
 *   connect  --conns C connection slots per thread.  A slot connects
 *            (non-blocking), sends --size bytes, reads the echo, checks it,
 *            closes, and starts over.  Completed connections are counted as
 *            in rr.  By default the client closes with SO_LINGER 0 (a RST), so
 *            no TIME_WAIT piles up on the client's ephemeral ports; --graceful
 *            does shutdown(SHUT_WR), waits for the server's EOF, then closes.
 *            EADDRNOTAVAIL (ephemeral ports exhausted) and refused connects
 *            are counted apart and the slot retries after 1 ms.
 *   idle     open --conns N connections (at most --batch connecting at once),
 *            do one echo on each to prove it is live, print a line
 *              {"event":"holding","conns":N,...}
 *            then hold them for --hold seconds (or, with --wait-stdin, until a
 *            line or EOF arrives on stdin), then close them all and print the
 *            result.  Connections the server drops while held are counted.
 *
 * RLIMIT_NOFILE's soft limit is raised to the hard limit in every mode.
 *
 * Latency (rr: one round trip; connect: connect + echo + close) is measured
 * with the clock read once per epoll_wait() return, so it has a resolution
 * of one batch of events; the percentiles are in microseconds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ options */

static const char *opt_mode;
static const char *opt_host = "127.0.0.1";
static const char *opt_port = NULL;
static const char *opt_unix = NULL;
static long opt_conns = -1;
static long opt_size = 64;
static double opt_seconds = 5.0;
static double opt_warmup = 1.0;
static long opt_threads = 1;
static double opt_hold = 10.0;
static int opt_wait_stdin = 0;
static int opt_graceful = 0;
static long opt_batch = 512;
static double opt_timeout = 60.0;

static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;
static int g_family;

#define PAT_SLIDE 256           /* messages slide over a pattern this much longer */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6
         + (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static void die_json(const char *what, int err)
{
    fprintf(stderr, "echo_load: %s: %s\n", what, err ? strerror(err) : "failed");
    printf("{\"mode\":\"%s\",\"error\":\"%s: %s\"}\n", opt_mode ? opt_mode : "?", what,
           err ? strerror(err) : "failed");
    fflush(stdout);
    exit(1);
}

static void usage(void)
{
    fprintf(stderr,
        "usage: echo_load rr|connect|idle [options]\n"
        "  --host H        server address (default 127.0.0.1)\n"
        "  --port P        server TCP port\n"
        "  --unix PATH     Unix stream socket instead (\"@name\": abstract)\n"
        "  --conns N       rr: connections (default 50); connect: slots per thread\n"
        "                  (default 16); idle: connections (default 10000)\n"
        "  --size S        message bytes (default 64)\n"
        "  --seconds D     measured seconds (default 5)\n"
        "  --warmup W      seconds before measuring (default 1)\n"
        "  --threads T     client threads for rr and connect (default 1)\n"
        "  --hold H        idle: seconds to hold the connections (default 10)\n"
        "  --wait-stdin    idle: stop holding early on a line or EOF on stdin\n"
        "  --graceful      connect/idle: close with FIN instead of RST\n"
        "  --batch B       idle: connections being set up at once (default 512)\n"
        "  --timeout T     idle: give up setting up after T seconds (default 60)\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, 0, 'a'},
        {"port", required_argument, 0, 'p'},
        {"unix", required_argument, 0, 'u'},
        {"conns", required_argument, 0, 'c'},
        {"size", required_argument, 0, 's'},
        {"seconds", required_argument, 0, 'd'},
        {"warmup", required_argument, 0, 'w'},
        {"threads", required_argument, 0, 't'},
        {"hold", required_argument, 0, 'H'},
        {"wait-stdin", no_argument, 0, 'i'},
        {"graceful", no_argument, 0, 'g'},
        {"batch", required_argument, 0, 'b'},
        {"timeout", required_argument, 0, 'T'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    if (argc < 2 || argv[1][0] == '-')
        usage();
    opt_mode = argv[1];
    if (strcmp(opt_mode, "rr") && strcmp(opt_mode, "connect") && strcmp(opt_mode, "idle"))
        usage();
    optind = 2;
    int c;
    while ((c = getopt_long(argc, argv, "a:p:u:c:s:d:w:t:H:igb:T:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'a': opt_host = optarg; break;
        case 'p': opt_port = optarg; break;
        case 'u': opt_unix = optarg; break;
        case 'c': opt_conns = strtol(optarg, NULL, 10); break;
        case 's': opt_size = strtol(optarg, NULL, 10); break;
        case 'd': opt_seconds = strtod(optarg, NULL); break;
        case 'w': opt_warmup = strtod(optarg, NULL); break;
        case 't': opt_threads = strtol(optarg, NULL, 10); break;
        case 'H': opt_hold = strtod(optarg, NULL); break;
        case 'i': opt_wait_stdin = 1; break;
        case 'g': opt_graceful = 1; break;
        case 'b': opt_batch = strtol(optarg, NULL, 10); break;
        case 'T': opt_timeout = strtod(optarg, NULL); break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
    if (opt_conns < 0)
        opt_conns = !strcmp(opt_mode, "rr") ? 50 : !strcmp(opt_mode, "connect") ? 16 : 10000;
    if (opt_conns < 1 || opt_size < 1 || opt_size > (1L << 26) || opt_threads < 1 ||
        opt_threads > 1024 || opt_seconds <= 0 || opt_warmup < 0 || opt_batch < 1 || opt_hold < 0)
        usage();
    if (!opt_unix && !opt_port) {
        fprintf(stderr, "echo_load: --port or --unix is required\n");
        usage();
    }
}

/* ---------------------------------------------------------------- sockets */

static void resolve(void)
{
    memset(&g_addr, 0, sizeof g_addr);
    if (opt_unix) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&g_addr;
        size_t n = strlen(opt_unix);
        if (n == 0 || n >= sizeof sun->sun_path)
            die_json("unix path too long", 0);
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, opt_unix, n);
        g_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        if (opt_unix[0] == '@') {                   /* abstract namespace */
            sun->sun_path[0] = '\0';
            g_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        }
        g_family = AF_UNIX;
        return;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(opt_host, opt_port, &hints, &res);
    if (rc != 0 || !res) {
        fprintf(stderr, "echo_load: %s:%s: %s\n", opt_host, opt_port, gai_strerror(rc));
        die_json("getaddrinfo", 0);
    }
    memcpy(&g_addr, res->ai_addr, res->ai_addrlen);
    g_addrlen = res->ai_addrlen;
    g_family = res->ai_family;
    freeaddrinfo(res);
}

static int new_socket(int nonblock)
{
    int fd = socket(g_family, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        return -1;
    if (g_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void close_rst(int fd)
{
    if (!opt_graceful) {
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(fd);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static long nofile_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    return rl.rlim_cur == RLIM_INFINITY ? -1 : (long)rl.rlim_cur;
}

/* A pattern of size + PAT_SLIDE pseudo-random bytes; message k is the
 * window starting at k % PAT_SLIDE. */
static unsigned char *make_pattern(uint64_t seed)
{
    size_t n = (size_t)opt_size + PAT_SLIDE;
    unsigned char *p = malloc(n);
    if (!p)
        die_json("malloc", ENOMEM);
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        p[i] = (unsigned char)(x >> 24);
    }
    return p;
}

/* ---------------------------------------------------------------- latency */

/* 1 us buckets below 10 ms, 1 ms buckets from 10 ms to 10 s, then overflow. */
#define HFINE 10000
#define HCOARSE 9990
#define HBUCKETS (HFINE + HCOARSE + 1)

struct hist {
    uint64_t b[HBUCKETS];
};

static void hist_add(struct hist *h, double seconds)
{
    double us = seconds * 1e6;
    size_t i;
    if (us < 0)
        us = 0;
    if (us < HFINE)
        i = (size_t)us;
    else if (us < (double)HFINE + HCOARSE * 1000.0)
        i = HFINE + (size_t)((us - HFINE) / 1000.0);
    else
        i = HBUCKETS - 1;
    h->b[i]++;
}

static double hist_bucket_us(size_t i)
{
    if (i < HFINE)
        return (double)i + 0.5;
    return (double)HFINE + (double)(i - HFINE) * 1000.0 + 500.0;
}

static double hist_pct(const struct hist *h, double q)
{
    uint64_t total = 0;
    for (size_t i = 0; i < HBUCKETS; i++)
        total += h->b[i];
    if (!total)
        return 0.0;
    uint64_t want = (uint64_t)(q * (double)total);
    if (want >= total)
        want = total - 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < HBUCKETS; i++) {
        seen += h->b[i];
        if (seen > want)
            return hist_bucket_us(i);
    }
    return hist_bucket_us(HBUCKETS - 1);
}

/* ------------------------------------------------------- per-thread state */

enum { S_FREE, S_RETRY, S_CONNECTING, S_ACTIVE, S_CLOSING, S_IDLE, S_DEAD };

struct conn {
    int fd;
    int state;
    uint32_t events;            /* what epoll waits for now */
    size_t sent, got;
    uint64_t seq;
    double t_start;
    double retry_at;
    unsigned char *pat;
};

struct worker {
    pthread_t tid;
    int ep;
    struct conn *conns;
    long nconns;
    unsigned char *rbuf;
    size_t rbufsz;
    /* results */
    uint64_t done;              /* round trips (rr) or connections (connect), measured */
    uint64_t done_total;        /* including the warm-up */
    uint64_t errors;            /* all errors */
    uint64_t mismatches;
    uint64_t io_errors;         /* resets, EOF mid-message, ... */
    uint64_t connect_errors;    /* refused, timed out, EAGAIN (unix backlog) */
    uint64_t addr_errors;       /* EADDRNOTAVAIL */
    uint64_t lost;              /* rr: connections that ended early */
    struct hist *hist;
};

static double g_t_start, g_t_meas, g_t_end;

static void ep_set(struct worker *w, struct conn *c, uint32_t ev)
{
    if (c->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    int op = c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(w->ep, op, c->fd, &e) != 0)
        die_json("epoll_ctl", errno);
    c->events = ev;
}

/* Send what is left of the current message.  Returns 0, or -1 on error. */
static int try_send(struct worker *w, struct conn *c)
{
    const unsigned char *msg = c->pat + (c->seq % PAT_SLIDE);
    while (c->sent < (size_t)opt_size) {
        ssize_t n = send(c->fd, msg + c->sent, (size_t)opt_size - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ep_set(w, c, EPOLLIN | EPOLLOUT);
            return 0;
        }
        return -1;
    }
    ep_set(w, c, EPOLLIN);
    return 0;
}

/* Read once.  Returns 1 when the whole echo is in and matches, 0 when more
 * is to come, -1 on error or EOF, -2 on a mismatch. */
static int try_recv(struct worker *w, struct conn *c)
{
    size_t want = (size_t)opt_size - c->got;
    if (want > w->rbufsz)
        want = w->rbufsz;
    ssize_t n = recv(c->fd, w->rbuf, want, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (n <= 0)
        return -1;
    const unsigned char *expect = c->pat + (c->seq % PAT_SLIDE) + c->got;
    if (memcmp(w->rbuf, expect, (size_t)n) != 0)
        return -2;
    c->got += (size_t)n;
    return c->got == (size_t)opt_size ? 1 : 0;
}

static void conn_fail(struct worker *w, struct conn *c, int mismatch)
{
    w->errors++;
    if (mismatch)
        w->mismatches++;
    else
        w->io_errors++;
    close_rst(c->fd);
    c->fd = -1;
    c->events = 0;
}

/* ------------------------------------------------------------------- rr */

static void *rr_thread(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[256];
    long alive = w->nconns;
    double t = now();
    for (long i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        c->sent = c->got = 0;
        c->t_start = t;
        if (try_send(w, c) != 0) {
            conn_fail(w, c, 0);
            w->lost++;
            alive--;
        }
    }
    while (alive > 0) {
        int n = epoll_wait(w->ep, evs, 256, 100);
        if (n < 0 && errno != EINTR)
            die_json("epoll_wait", errno);
        t = now();
        if (t >= g_t_end)
            break;
        for (int k = 0; k < n; k++) {
            struct conn *c = evs[k].data.ptr;
            if (c->fd < 0)
                continue;
            int rc = 0;
            if (evs[k].events & EPOLLOUT)
                rc = try_send(w, c);
            if (rc == 0 && (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                rc = try_recv(w, c);
            if (rc == 1) {
                if (c->sent != (size_t)opt_size) {
                    rc = -2;            /* an echo of bytes never sent */
                } else {
                    w->done_total++;
                    if (t >= g_t_meas) {
                        w->done++;
                        hist_add(w->hist, t - c->t_start);
                    }
                    c->seq++;
                    c->sent = c->got = 0;
                    c->t_start = t;
                    rc = try_send(w, c);
                }
            }
            if (rc < 0) {
                conn_fail(w, c, rc == -2);
                w->lost++;
                alive--;
            }
        }
    }
    return NULL;
}

/* -------------------------------------------------------------- connect */

static void slot_start(struct worker *w, struct conn *c, double t);

static void slot_retry(struct worker *w, struct conn *c, double t)
{
    (void)w;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->events = 0;
    c->state = S_RETRY;
    c->retry_at = t + 0.001;
}

static void slot_connected(struct worker *w, struct conn *c)
{
    c->state = S_ACTIVE;
    c->sent = c->got = 0;
    if (try_send(w, c) != 0)
        conn_fail(w, c, 0), c->state = S_FREE;
}

static void slot_start(struct worker *w, struct conn *c, double t)
{
    c->t_start = t;
    c->events = 0;
    c->seq++;
    c->fd = new_socket(1);
    if (c->fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            w->errors++;
            w->connect_errors++;
            slot_retry(w, c, t);
            return;
        }
        die_json("socket", errno);
    }
    if (connect(c->fd, (struct sockaddr *)&g_addr, g_addrlen) == 0) {
        slot_connected(w, c);
        return;
    }
    if (errno == EINPROGRESS) {
        c->state = S_CONNECTING;
        ep_set(w, c, EPOLLOUT);
        return;
    }
    w->errors++;
    if (errno == EADDRNOTAVAIL)
        w->addr_errors++;
    else
        w->connect_errors++;
    slot_retry(w, c, t);
}

static void *connect_thread(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[256];
    double t = now();
    for (long i = 0; i < w->nconns; i++)
        slot_start(w, &w->conns[i], t);
    for (;;) {
        int retries = 0;
        for (long i = 0; i < w->nconns; i++)
            if (w->conns[i].state == S_RETRY || w->conns[i].state == S_FREE)
                retries++;
        int n = epoll_wait(w->ep, evs, 256, retries ? 1 : 100);
        if (n < 0 && errno != EINTR)
            die_json("epoll_wait", errno);
        t = now();
        if (t >= g_t_end)
            break;
        for (int k = 0; k < n; k++) {
            struct conn *c = evs[k].data.ptr;
            if (c->fd < 0)
                continue;
            uint32_t ev = evs[k].events;
            if (c->state == S_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    w->errors++;
                    if (err == EADDRNOTAVAIL)
                        w->addr_errors++;
                    else
                        w->connect_errors++;
                    slot_retry(w, c, t);
                    continue;
                }
                slot_connected(w, c);
                continue;
            }
            if (c->state == S_CLOSING) {
                /* --graceful: wait for the server's EOF */
                ssize_t r = recv(c->fd, w->rbuf, w->rbufsz, 0);
                if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EINTR)))
                    continue;
                close(c->fd);
                c->fd = -1;
                c->events = 0;
                w->done_total++;
                if (t >= g_t_meas) {
                    w->done++;
                    hist_add(w->hist, t - c->t_start);
                }
                slot_start(w, c, t);
                continue;
            }
            int rc = 0;
            if (ev & EPOLLOUT)
                rc = try_send(w, c);
            if (rc == 0 && (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                rc = try_recv(w, c);
            if (rc == 1 && c->sent != (size_t)opt_size)
                rc = -2;
            if (rc == 1) {
                if (opt_graceful) {
                    shutdown(c->fd, SHUT_WR);
                    c->state = S_CLOSING;
                    continue;
                }
                close_rst(c->fd);
                c->fd = -1;
                c->events = 0;
                w->done_total++;
                if (t >= g_t_meas) {
                    w->done++;
                    hist_add(w->hist, t - c->t_start);
                }
                slot_start(w, c, t);
            } else if (rc < 0) {
                conn_fail(w, c, rc == -2);
                slot_start(w, c, t);
            }
        }
        for (long i = 0; i < w->nconns; i++) {
            struct conn *c = &w->conns[i];
            if ((c->state == S_RETRY && t >= c->retry_at) || c->state == S_FREE)
                slot_start(w, c, t);
        }
    }
    for (long i = 0; i < w->nconns; i++)
        if (w->conns[i].fd >= 0)
            close_rst(w->conns[i].fd);
    return NULL;
}

/* ---------------------------------------------------------- rr / connect */

static void print_common(const struct worker *ws, double cpu, double measured)
{
    struct worker s;
    memset(&s, 0, sizeof s);
    static struct hist h;
    memset(&h, 0, sizeof h);
    for (long i = 0; i < opt_threads; i++) {
        s.done += ws[i].done;
        s.done_total += ws[i].done_total;
        s.errors += ws[i].errors;
        s.mismatches += ws[i].mismatches;
        s.io_errors += ws[i].io_errors;
        s.connect_errors += ws[i].connect_errors;
        s.addr_errors += ws[i].addr_errors;
        s.lost += ws[i].lost;
        for (size_t b = 0; b < HBUCKETS; b++)
            h.b[b] += ws[i].hist->b[b];
    }
    int rr = !strcmp(opt_mode, "rr");
    printf("{\"mode\":\"%s\",\"conns\":%ld,\"threads\":%ld,\"size\":%ld,\"seconds\":%.3f,"
           "\"warmup\":%.3f,\"%s\":%llu,\"%s\":%.1f,\"total\":%llu,\"errors\":%llu,"
           "\"mismatches\":%llu,\"io_errors\":%llu,\"connect_errors\":%llu,\"addr_errors\":%llu,",
           opt_mode, rr ? opt_conns : opt_conns * opt_threads, opt_threads, opt_size, measured,
           opt_warmup, rr ? "round_trips" : "connections", (unsigned long long)s.done,
           rr ? "rps" : "cps", measured > 0 ? (double)s.done / measured : 0.0,
           (unsigned long long)s.done_total, (unsigned long long)s.errors,
           (unsigned long long)s.mismatches, (unsigned long long)s.io_errors,
           (unsigned long long)s.connect_errors, (unsigned long long)s.addr_errors);
    if (rr)
        printf("\"lost_conns\":%llu,", (unsigned long long)s.lost);
    else
        printf("\"close\":\"%s\",", opt_graceful ? "fin" : "rst");
    printf("\"lat_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f},"
           "\"client_cpu_s\":%.3f,\"elapsed_s\":%.3f}\n",
           hist_pct(&h, 0.50), hist_pct(&h, 0.90), hist_pct(&h, 0.99), hist_pct(&h, 0.999),
           cpu, g_t_end - g_t_start);
    fflush(stdout);
}

static int run_rr_or_connect(void)
{
    int rr = !strcmp(opt_mode, "rr");
    struct worker *ws = calloc((size_t)opt_threads, sizeof *ws);
    if (!ws)
        die_json("calloc", ENOMEM);
    long per = opt_conns / opt_threads, extra = opt_conns % opt_threads;
    long next_id = 0;
    for (long i = 0; i < opt_threads; i++) {
        struct worker *w = &ws[i];
        w->nconns = rr ? per + (i < extra) : opt_conns;
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        if (w->ep < 0)
            die_json("epoll_create1", errno);
        w->conns = calloc((size_t)(w->nconns ? w->nconns : 1), sizeof *w->conns);
        w->rbufsz = (size_t)(opt_size < 65536 ? opt_size : 65536);
        if (w->rbufsz < 4096)
            w->rbufsz = 4096;
        w->rbuf = malloc(w->rbufsz);
        w->hist = calloc(1, sizeof *w->hist);
        if (!w->conns || !w->rbuf || !w->hist)
            die_json("calloc", ENOMEM);
        for (long j = 0; j < w->nconns; j++) {
            struct conn *c = &w->conns[j];
            c->fd = -1;
            c->state = S_FREE;
            c->pat = make_pattern((uint64_t)next_id++);
            if (!rr)
                continue;
            /* rr: connect up front, blocking, then switch to non-blocking */
            c->fd = new_socket(0);
            if (c->fd < 0)
                die_json("socket", errno);
            if (connect(c->fd, (struct sockaddr *)&g_addr, g_addrlen) != 0)
                die_json("connect", errno);
            set_nonblock(c->fd);
            c->state = S_ACTIVE;
        }
    }
    double cpu0 = cpu_seconds();
    g_t_start = now();
    g_t_meas = g_t_start + opt_warmup;
    g_t_end = g_t_meas + opt_seconds;
    for (long i = 0; i < opt_threads; i++) {
        int rc = pthread_create(&ws[i].tid, NULL, rr ? rr_thread : connect_thread, &ws[i]);
        if (rc != 0)
            die_json("pthread_create", rc);
    }
    for (long i = 0; i < opt_threads; i++)
        pthread_join(ws[i].tid, NULL);
    double t_stop = now();
    double cpu = cpu_seconds() - cpu0;
    /* All connections of rr died early: the window measured is shorter. */
    double measured = opt_seconds;
    if (t_stop < g_t_end)
        measured = t_stop > g_t_meas ? t_stop - g_t_meas : 0.0;
    g_t_end = t_stop;
    print_common(ws, cpu, measured);
    for (long i = 0; i < opt_threads; i++) {
        for (long j = 0; j < ws[i].nconns; j++) {
            if (ws[i].conns[j].fd >= 0)
                close(ws[i].conns[j].fd);
            free(ws[i].conns[j].pat);
        }
        close(ws[i].ep);
        free(ws[i].conns);
        free(ws[i].rbuf);
        free(ws[i].hist);
    }
    free(ws);
    return 0;
}

/* ------------------------------------------------------------------ idle */

static int run_idle(void)
{
    long n = opt_conns;
    long limit = nofile_limit();
    if (limit >= 0 && limit < n + 16)
        fprintf(stderr, "echo_load: RLIMIT_NOFILE is %ld, fewer than %ld connections + 16\n",
                limit, n);
    struct worker w;
    memset(&w, 0, sizeof w);
    w.ep = epoll_create1(EPOLL_CLOEXEC);
    if (w.ep < 0)
        die_json("epoll_create1", errno);
    w.conns = calloc((size_t)n, sizeof *w.conns);
    w.rbufsz = (size_t)(opt_size < 65536 ? opt_size : 65536);
    if (w.rbufsz < 4096)
        w.rbufsz = 4096;
    w.rbuf = malloc(w.rbufsz);
    unsigned char *pat = make_pattern(12345);  /* one pattern: memory is the server's */
    if (!w.conns || !w.rbuf)
        die_json("calloc", ENOMEM);
    struct epoll_event evs[256];
    long next = 0, inflight = 0, live = 0, failed = 0, dropped = 0;
    double cpu0 = cpu_seconds();
    double t0 = now(), t = t0;
    while ((next < n || inflight > 0) && t - t0 < opt_timeout) {
        int backoff = 0;
        while (next < n && inflight < opt_batch) {
            struct conn *c = &w.conns[next++];
            c->pat = pat;
            c->fd = new_socket(1);
            if (c->fd < 0) {
                fprintf(stderr, "echo_load: socket: %s (after %ld)\n", strerror(errno), next - 1);
                c->state = S_DEAD;
                failed++;
                w.errors++;
                w.connect_errors++;
                if (errno == EMFILE || errno == ENFILE)
                    n = next;           /* no point trying further */
                continue;
            }
            inflight++;
            if (connect(c->fd, (struct sockaddr *)&g_addr, g_addrlen) == 0) {
                slot_connected(&w, c);
                if (c->fd < 0) {
                    c->state = S_DEAD;
                    inflight--;
                    failed++;
                }
            } else if (errno == EINPROGRESS) {
                c->state = S_CONNECTING;
                ep_set(&w, c, EPOLLOUT);
            } else if (errno == EAGAIN) {
                /* Unix socket with a full backlog: try this one again shortly */
                close(c->fd);
                c->fd = -1;
                inflight--;
                next--;
                backoff = 1;
                break;
            } else {
                w.errors++;
                if (errno == EADDRNOTAVAIL)
                    w.addr_errors++;
                else
                    w.connect_errors++;
                close(c->fd);
                c->fd = -1;
                c->state = S_DEAD;
                inflight--;
                failed++;
            }
        }
        int k = epoll_wait(w.ep, evs, 256, backoff ? 1 : 100);
        if (k < 0 && errno != EINTR)
            die_json("epoll_wait", errno);
        t = now();
        for (int i = 0; i < k; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd < 0 || c->state == S_IDLE)
                continue;
            if (c->state == S_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    w.errors++;
                    if (err == EADDRNOTAVAIL)
                        w.addr_errors++;
                    else
                        w.connect_errors++;
                    close(c->fd);
                    c->fd = -1;
                    c->state = S_DEAD;
                    inflight--;
                    failed++;
                    continue;
                }
                slot_connected(&w, c);
                if (c->fd < 0) {
                    c->state = S_DEAD;
                    inflight--;
                    failed++;
                }
                continue;
            }
            int rc = 0;
            if (evs[i].events & EPOLLOUT)
                rc = try_send(&w, c);
            if (rc == 0 && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                rc = try_recv(&w, c);
            if (rc == 1 && c->sent != (size_t)opt_size)
                rc = -2;
            if (rc == 1) {
                c->state = S_IDLE;      /* stays registered for EPOLLIN: a drop shows */
                inflight--;
                live++;
            } else if (rc < 0) {
                conn_fail(&w, c, rc == -2);
                c->state = S_DEAD;
                inflight--;
                failed++;
            }
        }
    }
    double t_setup = now() - t0;
    long timed_out = 0;
    for (long i = 0; i < next; i++) {
        struct conn *c = &w.conns[i];
        if (c->fd >= 0 && c->state != S_IDLE) {  /* still setting up at the timeout */
            close_rst(c->fd);
            c->fd = -1;
            c->state = S_DEAD;
            timed_out++;
        }
    }
    printf("{\"event\":\"holding\",\"conns\":%ld,\"failed\":%ld,\"timed_out\":%ld,"
           "\"setup_s\":%.3f}\n", live, failed, timed_out, t_setup);
    fflush(stdout);

    /* Hold. */
    double t_hold = now(), t_hold_end = t_hold + opt_hold;
    if (opt_wait_stdin) {
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
        if (epoll_ctl(w.ep, EPOLL_CTL_ADD, 0, &e) != 0)
            opt_wait_stdin = 0;         /* stdin not pollable (a file): just the timer */
    }
    int released = 0;
    while (!released && (t = now()) < t_hold_end) {
        int ms = (int)((t_hold_end - t) * 1000) + 1;
        int k = epoll_wait(w.ep, evs, 256, ms > 1000 ? 1000 : ms);
        if (k < 0 && errno != EINTR)
            die_json("epoll_wait", errno);
        for (int i = 0; i < k; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                released = 1;           /* stdin: a line or EOF */
                continue;
            }
            if (c->fd < 0)
                continue;
            ssize_t r = recv(c->fd, w.rbuf, w.rbufsz, 0);
            if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EINTR)))
                continue;               /* unexpected data: ignore */
            close(c->fd);
            c->fd = -1;
            c->state = S_DEAD;
            dropped++;
            live--;
        }
    }
    double held = now() - t_hold;

    /* Close. */
    double t_close = now();
    for (long i = 0; i < next; i++)
        if (w.conns[i].fd >= 0)
            close_rst(w.conns[i].fd);
    double close_s = now() - t_close;
    printf("{\"mode\":\"idle\",\"conns\":%ld,\"requested\":%ld,\"size\":%ld,\"failed\":%ld,"
           "\"timed_out\":%ld,\"dropped\":%ld,\"errors\":%llu,\"connect_errors\":%llu,"
           "\"addr_errors\":%llu,\"mismatches\":%llu,\"setup_s\":%.3f,\"held_s\":%.3f,"
           "\"close_s\":%.3f,\"close\":\"%s\",\"client_cpu_s\":%.3f,\"nofile\":%ld}\n",
           live + dropped, opt_conns, opt_size, failed, timed_out, dropped,
           (unsigned long long)w.errors, (unsigned long long)w.connect_errors,
           (unsigned long long)w.addr_errors, (unsigned long long)w.mismatches,
           t_setup, held, close_s, opt_graceful ? "fin" : "rst", cpu_seconds() - cpu0, limit);
    fflush(stdout);
    close(w.ep);
    free(w.conns);
    free(w.rbuf);
    free(pat);
    return live > 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    resolve();
    if (!strcmp(opt_mode, "idle"))
        return run_idle();
    return run_rr_or_connect();
}
