/* http.c -- HTTP/1.1 input: framing, the head check, parsing with llhttp,
 * bodies, limits, timeouts and dispatch (see pp_http.h).  The output side
 * -- heads, the order of answers, streaming -- is http_response.c. */
#include "http_internal.h"
#include "pp_http_static.h"
#include "pp_queue.h"
#include "pp_sync.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

void
pp_http_config_default(pp_http_config *cfg)
{
    cfg->max_line = 8192;
    cfg->max_head = 65536;
    cfg->max_headers = 100;
    cfg->max_body = 16u << 20;
    cfg->body_spill = 1u << 20;
    cfg->max_pipeline = 64;
    cfg->head_timeout_ns = 10000 * PP_NS_PER_MS;
    cfg->body_timeout_ns = 30000 * PP_NS_PER_MS;
    cfg->keepalive_timeout_ns = 5000 * PP_NS_PER_MS;
    cfg->send_timeout_ns = 30000 * PP_NS_PER_MS;
    cfg->server = "pyparallel";
}

void
pp_http_group_init(pp_http_group *g, pp_conn_group *conns,
                   const pp_http_config *cfg, const pp_http_handler *h,
                   void *data)
{
    memset(g, 0, sizeof(*g));
    g->conns = conns;
    if (cfg)
        g->cfg = *cfg;
    else
        pp_http_config_default(&g->cfg);
    if (g->cfg.server == NULL)
        g->cfg.server = "pyparallel";
    g->server_len = strlen(g->cfg.server);
    g->h = h;
    g->data = data;
    g->log_fd = -1;
    pp_link_init_head(&g->list);
}

const pp_http_header *
pp_http_find(const pp_http_request *r, const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < r->nheaders; i++) {
        const pp_http_header *h = &r->headers[i];
        if (h->name_len == len && strncasecmp(h->name, name, len) == 0)
            return h;
    }
    return NULL;
}

/* ---- timers ---------------------------------------------------------------- */

static void timer_fired(pp_loop *loop, pp_timer *t);

/* Enters a timer phase ending ns from now (ns 0: no deadline).  The timer
 * is only moved when the new deadline is earlier than the one it is set
 * for; a timer that fires early sleeps on (h2o's and nginx's lazy
 * timeouts, as pp_conn's idle timeout). */
static void
arm(pp_http_conn *hc, int phase, uint64_t ns)
{
    pp_loop *loop = pp_conn_loop(hc->c);

    hc->phase = phase;
    if (phase == PH_NONE || ns == 0) {
        hc->phase = PH_NONE;
        return;
    }
    hc->deadline = pp_loop_now(loop) + ns;
    if (!pp_timer_active(&hc->timer) || hc->timer.deadline > hc->deadline)
        (void)pp_timer_start_at(loop, &hc->timer, hc->deadline, 0,
                                timer_fired, hc);
}

static void
timer_fired(pp_loop *loop, pp_timer *t)
{
    pp_http_conn *hc = t->data;
    size_t kept = 0;

    if (hc->phase == PH_NONE || (hc->flags & HC_CLOSED))
        return;
    if (pp_loop_now(loop) < hc->deadline) {
        (void)pp_timer_start_at(loop, t, hc->deadline, 0, timer_fired, hc);
        return;
    }
    (void)pp_conn_unconsumed(hc->c, &kept);
    switch (hc->phase) {
    case PH_KEEPALIVE:
        pp_conn_close(hc->c);
        break;
    case PH_HEAD:
        /* A connection that never sent a byte is just closed. */
        hc->g->stats.timeouts++;
        if (kept == 0 && hc->first == NULL)
            pp_conn_close(hc->c);
        else
            pp__http_error(hc, 408);
        break;
    case PH_BODY:
        hc->g->stats.timeouts++;
        pp__http_error(hc, 408);
        break;
    }
    hc->phase = PH_NONE;
}

void
pp__http_idle(pp_http_conn *hc)
{
    size_t kept = 0;

    if (hc->flags & HC_CLOSED)
        return;
    if (hc->flags & HC_IDLE_OFF) {
        hc->flags &= ~HC_IDLE_OFF;
        (void)pp_conn_set_idle_timeout(hc->c, hc->g->cfg.send_timeout_ns);
    }
    if (hc->flags & HC_READ_PAUSED) {
        hc->flags &= ~HC_READ_PAUSED;
        pp_conn_resume_reading(hc->c);
        pp_conn_read_again(hc->c);
    }
    (void)pp_conn_unconsumed(hc->c, &kept);
    if (kept == 0 && hc->parsing == NULL && !(hc->flags & HC_IN_READ))
        arm(hc, PH_KEEPALIVE, hc->g->cfg.keepalive_timeout_ns);
}

/* ---- the head check ----------------------------------------------------------- */

/* Finds the end of the head at p (n bytes), checking every line as it
 * goes: lines end in CRLF, no CR or LF alone, no NUL, no line that starts
 * with whitespace (obsolete folding, or whitespace before the first
 * field).  Returns the head's length, 0 when more input is needed, or
 * -status.  hc->scanned keeps the start of the first line not yet
 * checked, so a head that trickles in byte by byte is scanned once. */
static long
find_head(pp_http_conn *hc, const char *p, size_t n)
{
    const pp_http_config *cfg = &hc->g->cfg;
    size_t limit = n < cfg->max_head ? n : cfg->max_head;
    size_t i = hc->scanned;

    for (;;) {
        const char *cr;
        size_t end;

        if (i > 0 && i < n && (p[i] == ' ' || p[i] == '\t'))
            return -400;
        cr = i < limit ? memchr(p + i, '\r', limit - i) : NULL;
        end = cr ? (size_t)(cr - p) : limit;
        if (memchr(p + i, '\n', end - i) || memchr(p + i, '\0', end - i))
            return -400;
        if (i == 0 && end > cfg->max_line)
            return -414;
        if (cr == NULL || end + 1 >= n) {
            hc->scanned = i;
            return n >= cfg->max_head ? -431 : 0;
        }
        if (p[end + 1] != '\n')
            return -400;
        if (end == i)                    /* the blank line */
            return i == 0 ? -400 : (long)(end + 2);
        i = end + 2;
    }
}

/* ---- parsing -------------------------------------------------------------------- */

static req *
cur(llhttp_t *p)
{
    pp_http_conn *hc = p->data;
    return hc->parsing;
}

static int
fail(llhttp_t *p, int status)
{
    ((pp_http_conn *)p->data)->err_status = status;
    return -1;
}

/* Spans arrive whole (the head is parsed in one piece), so each callback
 * sets its field; header names and values extend the last header. */
static int
on_method(llhttp_t *p, const char *at, size_t len)
{
    req *r = cur(p);
    r->pub.method = at;
    r->pub.method_len = (uint32_t)len;
    return 0;
}

static int
on_url(llhttp_t *p, const char *at, size_t len)
{
    req *r = cur(p);
    r->pub.target = at;
    r->pub.target_len = (uint32_t)len;
    return 0;
}

static int
on_header_field(llhttp_t *p, const char *at, size_t len)
{
    pp_http_conn *hc = p->data;
    req *r = hc->parsing;

    if (r->in_trailers) {
        /* Trailers are read and dropped, within the head's budget. */
        r->head_len += len;
        return r->head_len > hc->g->cfg.max_head ? fail(p, 431) : 0;
    }
    if (r->nhdr == 0 || r->last_was_value) {
        if (r->nhdr == hc->g->cfg.max_headers)
            return fail(p, 431);
        if (r->nhdr == r->hdr_cap) {
            size_t cap = r->hdr_cap ? r->hdr_cap * 2 : 16;
            pp_http_header *h = realloc(r->hdr, cap * sizeof(*h));
            if (h == NULL)
                return fail(p, 503);
            r->hdr = h;
            r->hdr_cap = cap;
        }
        r->hdr[r->nhdr].name = at;
        r->hdr[r->nhdr].name_len = 0;
        r->hdr[r->nhdr].value = at + len;
        r->hdr[r->nhdr].value_len = 0;
        r->nhdr++;
        r->last_was_value = 0;
    }
    r->hdr[r->nhdr - 1].name_len += (uint32_t)len;
    return 0;
}

static int
on_header_value(llhttp_t *p, const char *at, size_t len)
{
    pp_http_conn *hc = p->data;
    req *r = hc->parsing;
    pp_http_header *h;

    if (r->in_trailers) {
        r->head_len += len;
        return r->head_len > hc->g->cfg.max_head ? fail(p, 431) : 0;
    }
    h = &r->hdr[r->nhdr - 1];
    if (!r->last_was_value) {
        h->value = at;
        h->value_len = 0;
    }
    h->value_len += (uint32_t)len;
    r->last_was_value = 1;
    return 0;
}

static int
token_is(const char *p, size_t n, const char *tok)
{
    size_t k = strlen(tok);
    return n == k && strncasecmp(p, tok, k) == 0;
}

static int
on_headers_complete(llhttp_t *p)
{
    pp_http_conn *hc = p->data;
    req *r = hc->parsing;
    const pp_http_config *cfg = &hc->g->cfg;
    size_t i, hosts = 0;

    if (p->http_major != 1)
        return fail(p, 505);
    for (i = 0; i < r->nhdr; i++) {
        pp_http_header *h = &r->hdr[i];
        /* Trailing whitespace is not part of a value. */
        while (h->value_len && (h->value[h->value_len - 1] == ' ' ||
                                h->value[h->value_len - 1] == '\t'))
            h->value_len--;
        if (token_is(h->name, h->name_len, "host"))
            hosts++;
        else if (token_is(h->name, h->name_len, "expect")) {
            if (!token_is(h->value, h->value_len, "100-continue"))
                return fail(p, 417);
            r->expect_continue = p->http_minor >= 1;
        }
    }
    /* RFC 9112 3.2: exactly one Host in HTTP/1.1, at most one in 1.0. */
    if (hosts > 1 || (hosts == 0 && p->http_minor >= 1))
        return fail(p, 400);
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > cfg->max_body)
        return fail(p, 413);
    r->pub.version_minor = p->http_minor;
    if (llhttp_should_keep_alive(p) && !(hc->flags & HC_NO_MORE))
        r->pub.flags |= PP_HTTP_KEEP_ALIVE;
    if (p->flags & F_CHUNKED)
        r->pub.flags |= PP_HTTP_CHUNKED;
    if (p->method == HTTP_HEAD)
        r->pub.flags |= PP_HTTP_HEAD;
    r->in_trailers = 1;
    return 0;
}

/* Moves the body collected so far into an unlinked temporary file. */
static int
spill(req *r)
{
    int fd = -1;
    const char *dir = getenv("TMPDIR");
    size_t off = 0;

#ifdef O_TMPFILE
    fd = open(dir && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
#endif
    if (fd < 0) {
        char path[] = "/tmp/pyparallel-body-XXXXXX";
        if ((fd = mkostemp(path, O_CLOEXEC)) < 0)
            return -errno;
        unlink(path);
    }
    while (off < r->body.len) {
        ssize_t w = write(fd, r->body.data + off, r->body.len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            return -EIO;
        }
        off += (size_t)w;
    }
    pp_buf_free(&r->body);
    r->pub.body_fd = fd;
    return 0;
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
    pp_http_conn *hc = p->data;
    req *r = hc->parsing;
    const pp_http_config *cfg = &hc->g->cfg;

    if (len > cfg->max_body - r->pub.body_len)
        return fail(p, 413);
    r->pub.body_len += len;
    if (r->pub.body_fd < 0 && r->body.len + len > cfg->body_spill &&
        spill(r) < 0)
        return fail(p, 503);
    if (r->pub.body_fd >= 0) {
        while (len) {
            ssize_t w = write(r->pub.body_fd, at, len);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return fail(p, 503);
            at += w;
            len -= (size_t)w;
        }
        return 0;
    }
    return pp_buf_put(&r->body, at, len) < 0 ? fail(p, 503) : 0;
}

static int
on_message_complete(llhttp_t *p)
{
    cur(p)->complete = 1;
    return HPE_PAUSED;           /* llhttp_execute returns where it ended */
}

static const llhttp_settings_t settings = {
    .on_method = on_method,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* The status for a parse error: our callbacks' own, 505 for a version
 * llhttp does not know (HTTP/3.0), else 400. */
static int
parse_status(pp_http_conn *hc, llhttp_errno_t err)
{
    int st = hc->err_status ? hc->err_status
           : err == HPE_INVALID_VERSION ? 505 : 400;

    hc->err_status = 0;
    return st;
}

/* Static mounts answer what lies under them before the owner sees it. */
static int
serve_static(pp_http_group *g, pp_http_request *r)
{
    size_t i;

    for (i = 0; i < g->nstatics; i++)
        if (pp_http_static_serve(g->statics[i], r))
            return 1;
    return 0;
}

static void
dispatch(pp_http_conn *hc, req *r)
{
    pp_http_group *g = hc->g;

    hc->parsing = NULL;
    r->pub.body = r->pub.body_fd < 0 ? (const char *)r->body.data : NULL;
    if (r->pub.body == NULL && r->pub.body_fd < 0)
        r->pub.body = "";
    g->stats.requests++;
    if (hc->inflight > g->stats.pipelined_max)
        g->stats.pipelined_max = hc->inflight;
    if (g->log_fd >= 0)
        r->t0 = pp_now_ns();
    r->refs++;                   /* the owner may answer and pop it */
    if (!serve_static(g, &r->pub))
        g->h->on_request(hc, &r->pub);
    if (r->answer != ANS_DONE && !(hc->flags & (HC_CLOSED | HC_IDLE_OFF))) {
        /* Answered later: a slow handler is not a slow reader. */
        hc->flags |= HC_IDLE_OFF;
        (void)pp_conn_set_idle_timeout(hc->c, 0);
    }
    pp__http_unref(r);
}

/* Starts a request on the head at p (len bytes, checked): copies it,
 * parses it, and either dispatches it or leaves it waiting for its body.
 * Returns 0, or -1 when it was refused. */
static int
start_request(pp_http_conn *hc, const char *p, size_t len)
{
    req *r = malloc(sizeof(*r) + len + 1);
    llhttp_errno_t err;

    if (r == NULL) {
        pp__http_error(hc, 503);
        return -1;
    }
    memset(r, 0, sizeof(*r));
    memcpy(r->head, p, len);
    r->head[len] = '\0';
    r->head_len = len;
    r->refs = 1;                 /* the line's */
    r->tail = &r->pieces;
    r->pub.body_fd = -1;
    r->pub.seq = hc->seq++;
    r->pub.conn = hc;
    r->pub.query = "";
    if (hc->last)
        hc->last->next = r;
    else
        hc->first = r;
    hc->last = r;
    hc->inflight++;
    hc->parsing = r;

    /* Every head is parsed from a fresh parser: nothing the last message
     * said (a "Connection: close" in its trailers, an error) carries over
     * into how this one is read. */
    llhttp_reset(&hc->parser);
    err = llhttp_execute(&hc->parser, r->head, len);
    if (err == HPE_PAUSED) {
        llhttp_resume(&hc->parser);
    } else if (err != HPE_OK) {
        pp__http_error(hc, parse_status(hc, err));
        return -1;
    }
    if (r->pub.method_len == 0 || r->pub.target_len == 0) {
        pp__http_error(hc, 400);  /* the head did not hold a request line */
        return -1;
    }
    {
        const char *q = memchr(r->pub.target, '?', r->pub.target_len);
        r->pub.path = r->pub.target;
        r->pub.path_len = q ? (uint32_t)(q - r->pub.target) : r->pub.target_len;
        if (q) {
            r->pub.query = q + 1;
            r->pub.query_len = r->pub.target_len - r->pub.path_len - 1;
        }
    }
    r->pub.headers = r->hdr;
    r->pub.nheaders = r->nhdr;
    if (!(r->pub.flags & PP_HTTP_KEEP_ALIVE))
        hc->flags |= HC_NO_MORE;     /* its answer closes the connection */
    r->head_len = len;           /* trailers count from here */
    if (r->complete) {
        dispatch(hc, r);
        return 0;
    }
    if (r->expect_continue && hc->first == r) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        (void)pp_conn_write(hc->c, cont, sizeof(cont) - 1);
    }
    arm(hc, PH_BODY, hc->g->cfg.body_timeout_ns);
    return 0;
}

/* Body bytes for the request being read.  Returns the bytes consumed, or
 * -1 when it was refused. */
static long
feed_body(pp_http_conn *hc, const char *p, size_t n)
{
    llhttp_errno_t err = llhttp_execute(&hc->parser, p, n);
    req *r = hc->parsing;
    size_t used = n;

    if (err == HPE_PAUSED) {
        used = (size_t)(llhttp_get_error_pos(&hc->parser) - p);
        llhttp_resume(&hc->parser);
    } else if (err != HPE_OK) {
        pp__http_error(hc, parse_status(hc, err));
        return -1;
    }
    if (r->complete)
        dispatch(hc, r);
    return (long)used;
}

/* ---- the connection ---------------------------------------------------------- */

static void
http_open(pp_conn *c)
{
    pp_http_group *g = pp_conn_data(c);
    pp_http_conn *hc = pp_conn_alloc(c, sizeof(*hc));

    if (hc == NULL) {
        pp_conn_set_data(c, NULL);
        pp_conn_abort(c);
        return;
    }
    memset(hc, 0, sizeof(*hc));
    hc->c = c;
    hc->g = g;
    llhttp_init(&hc->parser, HTTP_REQUEST, &settings);
    hc->parser.data = hc;
    pp_conn_set_data(c, hc);
    pp_link_append(&g->list, &hc->link);
    g->count++;
    (void)pp_conn_set_idle_timeout(c, g->cfg.send_timeout_ns);
    arm(hc, PH_HEAD, g->cfg.head_timeout_ns);
    if (g->draining)
        hc->flags |= HC_NO_MORE;
    if (g->h->on_open)
        g->h->on_open(hc);
}

static size_t
http_read(pp_conn *c, const char *data, size_t len)
{
    pp_http_conn *hc = pp_conn_data(c);
    size_t off = 0, kept;

    hc->flags |= HC_IN_READ;
    while (off < len && !(hc->flags & HC_CLOSED)) {
        long n;
        if (hc->parsing) {
            if ((n = feed_body(hc, data + off, len - off)) < 0) {
                off = len;
                break;
            }
            off += (size_t)n;
            continue;
        }
        if (hc->flags & HC_NO_MORE) {
            off = len;           /* nothing behind a close is read */
            break;
        }
        if (hc->inflight >= hc->g->cfg.max_pipeline) {
            hc->flags |= HC_READ_PAUSED;
            pp_conn_pause_reading(c);
            break;
        }
        /* Empty lines before a request line are ignored (RFC 9112 2.2). */
        if (hc->scanned == 0) {
            while (len - off >= 2 && data[off] == '\r' && data[off + 1] == '\n')
                off += 2;
            if (off == len || (len - off == 1 && data[off] == '\r'))
                break;
        }
        n = find_head(hc, data + off, len - off);
        if (n == 0)
            break;
        if (n < 0) {
            pp__http_error(hc, (int)-n);
            off = len;
            break;
        }
        hc->scanned = 0;
        if (start_request(hc, data + off, (size_t)n) < 0) {
            off = len;
            break;
        }
        off += (size_t)n;
    }
    hc->flags &= ~HC_IN_READ;
    if (hc->flags & HC_CLOSED)
        return len;
    kept = len - off;
    if (hc->parsing == NULL) {
        if (kept > 0 && !(hc->flags & HC_NO_MORE)) {
            /* A head begun in this pass gets its own deadline; one still
             * coming in keeps the deadline of its first byte. */
            if (off > 0 || hc->phase != PH_HEAD)
                arm(hc, PH_HEAD, hc->g->cfg.head_timeout_ns);
        } else if (hc->first == NULL) {
            arm(hc, PH_KEEPALIVE, hc->g->cfg.keepalive_timeout_ns);
        } else {
            hc->phase = PH_NONE;
        }
    }
    return off;
}

static void
http_eof(pp_conn *c)
{
    pp_http_conn *hc = pp_conn_data(c);

    /* Answers still owed are sent; then the connection closes. */
    hc->flags |= HC_NO_MORE;
    if (hc->parsing) {
        /* A body cut short: nothing to answer.  A close-delimited body
         * does not exist in requests, so this is always incomplete. */
        pp_conn_close(c);
        return;
    }
    if (hc->first == NULL)
        pp_conn_close(c);
}

static void
http_close(pp_conn *c, int err)
{
    pp_http_conn *hc = pp_conn_data(c);
    pp_http_group *g;

    if (hc == NULL)              /* on_open found no memory */
        return;
    g = hc->g;
    hc->flags |= HC_CLOSED;
    pp_timer_stop(pp_conn_loop(c), &hc->timer);
    pp_link_remove(&hc->link);
    g->count--;
    if (err == -ETIMEDOUT)
        g->stats.timeouts++;
    if (g->h->on_close)
        g->h->on_close(hc, err);
    pp__http_cut_loose(hc);
}

/* The output drained to the low-water mark: a streamed answer that was
 * told to stop (pp_http_send returned 1) may go on. */
static void
http_resume_writing(pp_conn *c)
{
    pp_http_conn *hc = pp_conn_data(c);

    if (hc && !(hc->flags & HC_CLOSED) && hc->g->h->on_writable)
        hc->g->h->on_writable(hc);
}

const pp_conn_handler pp_http_conn_handler = {
    .on_open = http_open,
    .on_read = http_read,
    .on_eof = http_eof,
    .on_resume_writing = http_resume_writing,
    .on_close = http_close,
};

void
pp_http_group_drain(pp_http_group *g)
{
    pp_link *l, *next;

    g->draining = 1;
    for (l = g->list.next; l != &g->list; l = next) {
        pp_http_conn *hc = pp_container_of(l, pp_http_conn, link);
        next = l->next;
        hc->flags |= HC_NO_MORE;
        if (hc->first == NULL && hc->parsing == NULL)
            pp_conn_close(hc->c);
    }
}

/* ---- accessors --------------------------------------------------------------- */

pp_conn *
pp_http_conn_pp(const pp_http_conn *hc)
{
    return hc->c;
}

pp_http_group *
pp_http_conn_group(const pp_http_conn *hc)
{
    return hc->g;
}

void *
pp_http_conn_data(const pp_http_conn *hc)
{
    return hc->data;
}

void
pp_http_conn_set_data(pp_http_conn *hc, void *data)
{
    hc->data = data;
}

const char *
pp_http_conn_peer(pp_http_conn *hc, int *port)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = pp_conn_fd(hc->c);

    if (hc->peer == NULL && (hc->peer = pp_conn_alloc(hc->c, INET6_ADDRSTRLEN)) != NULL) {
        hc->peer[0] = '\0';
        if (fd >= 0 && getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
            if (ss.ss_family == AF_INET) {
                struct sockaddr_in *a = (struct sockaddr_in *)&ss;
                inet_ntop(AF_INET, &a->sin_addr, hc->peer, INET6_ADDRSTRLEN);
                hc->peer_port = ntohs(a->sin_port);
            } else if (ss.ss_family == AF_INET6) {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
                inet_ntop(AF_INET6, &a->sin6_addr, hc->peer, INET6_ADDRSTRLEN);
                hc->peer_port = ntohs(a->sin6_port);
            }
        }
    }
    if (port)
        *port = hc->peer_port;
    return hc->peer ? hc->peer : "";
}
