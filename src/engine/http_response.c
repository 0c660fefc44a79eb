/* http_response.c -- HTTP/1.1 output: the response head, answers kept in
 * request order, streamed bodies, and the end of a request's life (see
 * pp_http.h).
 *
 * The line: every request read on a connection joins its line and leaves
 * it once its answer is complete and handed to the pp_conn.  Only the
 * request at the head of the line writes to the pp_conn; one behind it
 * keeps its output as pieces until it gets there.  On the fast path -- an
 * owner that answers inside on_request -- every request is at the head
 * when it is answered, and nothing is kept. */
#include "http_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *
pp_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* ---- the cached date ------------------------------------------------------------ */

static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
const char pp__http_months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void
pp_http_format_date(time_t t, char buf[32])
{
    struct tm tm;

    gmtime_r(&t, &tm);
    snprintf(buf, 32, "%s, %02d %s %04d %02d:%02d:%02d GMT",
             days[tm.tm_wday], tm.tm_mday, pp__http_months[tm.tm_mon],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* ---- requests' memory ------------------------------------------------------------ */

static void
drop_pieces(req *r)
{
    piece *p, *next;

    for (p = r->pieces; p; p = next) {
        next = p->next;
        if (p->fd >= 0)
            close(p->fd);
        else if (p->release)
            p->release(p->ctx);
        free(p);
    }
    r->pieces = NULL;
    r->tail = &r->pieces;
}

void
pp__http_unref(req *r)
{
    if (--r->refs > 0)
        return;
    drop_pieces(r);
    pp_buf_free(&r->body);
    if (r->pub.body_fd >= 0)
        close(r->pub.body_fd);
    free(r->hdr);
    free(r);
}

void
pp_http_hold(pp_http_request *pub)
{
    pp__req(pub)->refs++;
}

void
pp_http_release(pp_http_request *pub)
{
    pp__http_unref(pp__req(pub));
}

void
pp__http_cut_loose(pp_http_conn *hc)
{
    req *r = hc->first, *next;

    for (; r; r = next) {
        next = r->next;
        r->next = NULL;
        r->pub.conn = NULL;
        drop_pieces(r);
        pp__http_unref(r);
    }
    hc->first = hc->last = hc->parsing = NULL;
    hc->inflight = 0;
}

/* ---- output ------------------------------------------------------------------------ */

/* Bytes for r: written when r heads the line, else kept as a piece.  With
 * release, the bytes are r's by reference.  Returns as pp_conn_write(). */
static int
out_bytes(pp_http_conn *hc, req *r, const void *p, size_t n,
          pp_release_proc release, void *ctx)
{
    piece *pc;
    int rc;

    if (hc->first == r && r->pieces == NULL) {
        if (release) {
            rc = pp_conn_write_ref(hc->c, p, n, release, ctx);
            if (rc < 0)
                release(ctx);
            return rc;
        }
        return pp_conn_write(hc->c, p, n);
    }
    pc = malloc(sizeof(*pc) + (release ? 0 : n));
    if (pc == NULL) {
        if (release)
            release(ctx);
        return -ENOMEM;
    }
    pc->next = NULL;
    pc->fd = -1;
    pc->len = n;
    pc->release = release;
    pc->ctx = ctx;
    if (release) {
        pc->p = p;
    } else {
        memcpy(pc + 1, p, n);
        pc->p = (const char *)(pc + 1);
    }
    *r->tail = pc;
    r->tail = &pc->next;
    return 0;
}

static int
out_file(pp_http_conn *hc, req *r, int fd, off_t off, size_t count)
{
    piece *pc;

    if (hc->first == r && r->pieces == NULL) {
        pp_conn_file f = {fd, PP_FILE_CLOSE, off, count, NULL, 0, NULL, 0};
        int rc = pp_conn_sendfile(hc->c, &f);
        if (rc < 0)
            close(fd);
        return rc;
    }
    if ((pc = malloc(sizeof(*pc))) == NULL) {
        close(fd);
        return -ENOMEM;
    }
    memset(pc, 0, sizeof(*pc));
    pc->fd = fd;
    pc->offset = off;
    pc->len = count;
    *r->tail = pc;
    r->tail = &pc->next;
    return 0;
}

/* r has reached the head of the line: its kept output goes out. */
static void
flush_pieces(pp_http_conn *hc, req *r)
{
    piece *p = r->pieces, *next;

    r->pieces = NULL;
    r->tail = &r->pieces;
    for (; p; p = next) {
        next = p->next;
        if (p->fd >= 0)
            (void)out_file(hc, r, p->fd, p->offset, p->len);
        else
            (void)out_bytes(hc, r, p->p, p->len, p->release, p->ctx);
        free(p);
    }
}

void
pp__http_advance(pp_http_conn *hc)
{
    req *r;

    while ((r = hc->first) != NULL && !(hc->flags & HC_CLOSED)) {
        if (r->pieces)
            flush_pieces(hc, r);
        if (r->answer != ANS_DONE)
            return;
        hc->first = r->next;
        if (hc->first == NULL)
            hc->last = NULL;
        r->next = NULL;
        hc->inflight--;
        if (r->close_after) {
            /* Nothing behind a close is answered (nor was it read). */
            hc->flags |= HC_NO_MORE;
            pp__http_cut_loose(hc);
            pp__http_unref(r);
            pp_conn_close(hc->c);
            return;
        }
        pp__http_unref(r);
    }
    if (hc->flags & HC_CLOSED)
        return;
    if (hc->first == NULL && hc->parsing == NULL && (hc->flags & HC_NO_MORE)) {
        pp_conn_close(hc->c);
        return;
    }
    if (hc->first == NULL)
        pp__http_idle(hc);
    else if ((hc->flags & HC_READ_PAUSED) && hc->inflight < hc->g->cfg.max_pipeline) {
        hc->flags &= ~HC_READ_PAUSED;
        pp_conn_resume_reading(hc->c);
        pp_conn_read_again(hc->c);
    }
}

/* ---- answers ------------------------------------------------------------------------ */

void
pp_http_response_init(pp_http_response *r, int status)
{
    memset(r, 0, sizeof(*r));
    r->status = status;
    r->file_fd = -1;
    r->content_length = -1;
}

static void
discard(const pp_http_response *resp)
{
    if ((resp->flags & PP_HTTP_BODY_REF) && resp->release)
        resp->release(resp->ctx);
    if (resp->file_fd >= 0)
        close(resp->file_fd);
}

/* Appends s (n bytes) at *pos in buf (cap bytes); returns 0 or -1 when it
 * does not fit. */
static int
put(char *buf, size_t cap, size_t *pos, const char *s, size_t n)
{
    if (n > cap - *pos)
        return -1;
    if (n)                       /* s may be NULL for nothing */
        memcpy(buf + *pos, s, n);
    *pos += n;
    return 0;
}

#define PUTS(s) put(buf, cap, &pos, (s), strlen(s))
#define PUTN(s, n) put(buf, cap, &pos, (s), (n))

/* The Date, formatted at most once a second per group (a group lives on
 * one thread: no lock, no thread-local lookup per answer). */
static const char *
group_date(pp_http_group *g)
{
    time_t now = time(NULL);

    if (now != g->date_sec) {
        pp_http_format_date(now, g->date);
        g->date_sec = now;
    }
    return g->date;
}

/* Writes the head of r's answer into buf.  Returns its length, or -1 when
 * it does not fit in cap. */
static long
build_head(pp_http_conn *hc, req *r, const pp_http_response *resp,
           char *buf, size_t cap, int64_t length)
{
    pp_http_group *g = hc->g;
    size_t pos = 0;
    char line[32] = "HTTP/1.1 000 ";
    int st = resp->status;

    line[9] = (char)('0' + st / 100);
    line[10] = (char)('0' + st / 10 % 10);
    line[11] = (char)('0' + st % 10);
    if (PUTN(line, 13) || PUTS(pp_http_reason(resp->status)) ||
        PUTN("\r\nServer: ", 10) || PUTN(g->cfg.server, g->server_len) ||
        PUTN("\r\nDate: ", 8) || PUTN(group_date(g), 29) ||
        PUTN("\r\n", 2))
        return -1;
    if (resp->content_type &&
        (PUTN("Content-Type: ", 14) ||
         PUTN(resp->content_type, resp->content_type_len) || PUTN("\r\n", 2)))
        return -1;
    if (length >= 0) {
        /* Digits from the right: no printf on every answer. */
        char *end = line + sizeof line, *d = end;
        uint64_t v = (uint64_t)length;
        *--d = '\n';
        *--d = '\r';
        do {
            *--d = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        if (PUTN("Content-Length: ", 16) || PUTN(d, (size_t)(end - d)))
            return -1;
    } else if (r->chunked_out && PUTS("Transfer-Encoding: chunked\r\n")) {
        return -1;
    }
    if (r->close_after) {
        if (PUTS("Connection: close\r\n"))
            return -1;
    } else if (r->pub.version_minor == 0 && PUTS("Connection: keep-alive\r\n")) {
        return -1;
    }
    if (PUTN(resp->headers, resp->headers_len) || PUTN("\r\n", 2))
        return -1;
    return (long)pos;
}

int
pp_http_respond(pp_http_request *pub, const pp_http_response *resp)
{
    req *r = pp__req(pub);
    pp_http_conn *hc = pub->conn;
    char stack[1024], *buf = stack;
    size_t cap = sizeof stack;
    int64_t length = -1;
    long hl;
    int rc, status = resp->status, stream = (resp->flags & PP_HTTP_STREAM) != 0;

    if (r->answer != ANS_NONE || status < 200 || status > 999) {
        discard(resp);
        return -EINVAL;
    }
    r->answer = stream ? ANS_STREAM : ANS_DONE;
    if (hc == NULL || (hc->flags & HC_CLOSED)) {
        r->answer = ANS_DONE;
        discard(resp);
        return -EPIPE;
    }
    r->no_body = (pub->flags & PP_HTTP_HEAD) || status == 204 || status == 304;
    if (status == 204 || status == 304)
        length = -1;
    else if (!stream)
        length = (int64_t)resp->body_len + (resp->file_fd >= 0 ? (int64_t)resp->file_count : 0);
    else if (resp->content_length >= 0)
        length = resp->content_length;
    else if (pub->version_minor >= 1)
        r->chunked_out = !r->no_body;
    if (stream && length < 0 && !r->chunked_out && !r->no_body)
        r->close_after = 1;      /* HTTP/1.0: the close ends the body */
    /* No more requests will be read (a drain, the peer's EOF, a refusal
     * behind this one): the last answer in the line says so. */
    if ((resp->flags & PP_HTTP_CLOSE) || !(pub->flags & PP_HTTP_KEEP_ALIVE) ||
        ((hc->flags & HC_NO_MORE) && hc->last == r && hc->parsing == NULL))
        r->close_after = 1;
    if (r->close_after)
        hc->flags |= HC_NO_MORE;

    hl = build_head(hc, r, resp, buf, cap, length);
    if (hl < 0) {
        cap = resp->headers_len + resp->content_type_len + hc->g->server_len + 512;
        if ((buf = malloc(cap)) == NULL ||
            (hl = build_head(hc, r, resp, buf, cap, length)) < 0) {
            free(buf);
            discard(resp);
            return -ENOMEM;
        }
    }
    hc->g->stats.responses++;
    if (hc->g->log_fd >= 0)
        pp__http_log_answer(hc, r, status, r->no_body ? 0 : length);
    hc->g->stats.status[status / 100 <= 5 ? status / 100 : 5]++;

    if (r->no_body) {
        rc = out_bytes(hc, r, buf, (size_t)hl, NULL, NULL);
        discard(resp);
    } else if (!(resp->flags & PP_HTTP_BODY_REF) && resp->body_len &&
               (size_t)hl + resp->body_len <= sizeof stack && buf == stack &&
               !r->chunked_out) {
        /* Head and a small body in one copy. */
        memcpy(stack + hl, resp->body, resp->body_len);
        rc = out_bytes(hc, r, stack, (size_t)hl + resp->body_len, NULL, NULL);
        if (resp->file_fd >= 0)
            rc = rc < 0 ? (close(resp->file_fd), rc)
                        : out_file(hc, r, resp->file_fd, resp->file_offset, resp->file_count);
    } else {
        rc = out_bytes(hc, r, buf, (size_t)hl, NULL, NULL);
        if (resp->body_len) {
            if (r->chunked_out) {
                if (rc >= 0)
                    rc = pp_http_send(pub, resp->body, resp->body_len);
                if (resp->flags & PP_HTTP_BODY_REF)
                    resp->release(resp->ctx);
            } else if (resp->flags & PP_HTTP_BODY_REF) {
                rc = rc < 0 ? (resp->release(resp->ctx), rc)
                            : out_bytes(hc, r, resp->body, resp->body_len,
                                        resp->release, resp->ctx);
            } else if (rc >= 0) {
                rc = out_bytes(hc, r, resp->body, resp->body_len, NULL, NULL);
            }
        } else if ((resp->flags & PP_HTTP_BODY_REF) && resp->release) {
            resp->release(resp->ctx);
        }
        if (resp->file_fd >= 0)
            rc = rc < 0 ? (close(resp->file_fd), rc)
                        : out_file(hc, r, resp->file_fd, resp->file_offset, resp->file_count);
    }
    if (buf != stack)
        free(buf);
    if (rc < 0) {
        /* Half an answer cannot be taken back: the connection goes. */
        r->answer = ANS_DONE;
        pp_conn_abort(hc->c);
        return rc;
    }
    if (!stream)
        pp__http_advance(hc);
    return rc > 0 ? 1 : 0;
}

int
pp_http_send(pp_http_request *pub, const void *data, size_t len)
{
    req *r = pp__req(pub);
    pp_http_conn *hc = pub->conn;
    char size[24];
    int rc, n;

    if (r->answer != ANS_STREAM)
        return -EINVAL;
    if (hc == NULL || (hc->flags & HC_CLOSED))
        return -EPIPE;
    if (r->no_body || len == 0)
        return 0;
    if (r->chunked_out) {
        n = snprintf(size, sizeof size, "%zx\r\n", len);
        if ((rc = out_bytes(hc, r, size, (size_t)n, NULL, NULL)) < 0 ||
            (rc = out_bytes(hc, r, data, len, NULL, NULL)) < 0 ||
            (rc = out_bytes(hc, r, "\r\n", 2, NULL, NULL)) < 0)
            goto failed;
    } else if ((rc = out_bytes(hc, r, data, len, NULL, NULL)) < 0) {
        goto failed;
    }
    return hc->first == r && rc > 0 ? 1 : 0;
failed:
    pp_conn_abort(hc->c);
    return rc;
}

int
pp_http_end(pp_http_request *pub)
{
    req *r = pp__req(pub);
    pp_http_conn *hc = pub->conn;
    int rc = 0;

    if (r->answer != ANS_STREAM)
        return -EINVAL;
    r->answer = ANS_DONE;
    if (hc == NULL || (hc->flags & HC_CLOSED))
        return -EPIPE;
    if (r->chunked_out && !r->no_body &&
        (rc = out_bytes(hc, r, "0\r\n\r\n", 5, NULL, NULL)) < 0) {
        pp_conn_abort(hc->c);
        return rc;
    }
    pp__http_advance(hc);
    return 0;
}

/* ---- refusals ------------------------------------------------------------------------ */

void
pp__http_error(pp_http_conn *hc, int status)
{
    req *r = hc->parsing, *e;
    pp_http_response resp;
    char body[96];
    int n;

    /* The request being read leaves the line (it is the last in it). */
    if (r) {
        req **pp = &hc->first, *prev = NULL;
        while (*pp && *pp != r) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        if (*pp) {
            *pp = NULL;
            hc->last = prev;
            hc->inflight--;
        }
        hc->parsing = NULL;
        pp__http_unref(r);
    }
    hc->g->stats.rejected++;
    hc->flags |= HC_NO_MORE;
    if ((e = calloc(1, sizeof(*e) + 1)) == NULL) {
        pp_conn_abort(hc->c);
        return;
    }
    e->refs = 1;
    e->tail = &e->pieces;
    e->pub.body_fd = -1;
    e->pub.conn = hc;
    e->pub.version_minor = 1;
    e->pub.method = e->pub.target = e->pub.path = e->pub.query = e->pub.body = "";
    e->pub.seq = hc->seq++;
    if (hc->last)
        hc->last->next = e;
    else
        hc->first = e;
    hc->last = e;
    hc->inflight++;
    n = snprintf(body, sizeof body, "%d %s\n", status, pp_http_reason(status));
    pp_http_response_init(&resp, status);
    resp.flags = PP_HTTP_CLOSE;
    resp.content_type = "text/plain; charset=utf-8";
    resp.content_type_len = strlen(resp.content_type);
    resp.body = body;
    resp.body_len = (size_t)n;
    (void)pp_http_respond(&e->pub, &resp);
}
