/* http_log.c -- the access log: formats compiled once, lines built in each
 * group's own buffer, written in batches (see pp_http.h). */
#include "http_internal.h"
#include "pp_sync.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum {
    OP_TEXT, OP_HOST, OP_DASH, OP_TIME, OP_REQUEST, OP_METHOD, OP_PATH,
    OP_QUERY, OP_PROTO, OP_STATUS, OP_BYTES_CLF, OP_BYTES, OP_USEC, OP_SEC,
    OP_HEADER
};

typedef struct op {
    int kind;
    size_t off, len;             /* OP_TEXT, OP_HEADER: text[off..off+len) */
} op;

struct pp_http_log_format {
    size_t nops;
    op *ops;
    char *text;
};

#define LOG_COMMON "%h %l %u %t \"%r\" %s %b"
#define LOG_COMBINED LOG_COMMON " \"%{Referer}i\" \"%{User-Agent}i\""
#define LOG_FLUSH_AT 32768

static int
add_op(pp_http_log_format *f, int kind, size_t off, size_t len)
{
    op *o;

    if (kind == OP_TEXT && f->nops && f->ops[f->nops - 1].kind == OP_TEXT &&
        f->ops[f->nops - 1].off + f->ops[f->nops - 1].len == off) {
        f->ops[f->nops - 1].len += len;     /* text runs stay one op */
        return 0;
    }
    if ((o = realloc(f->ops, (f->nops + 1) * sizeof(*o))) == NULL)
        return -ENOMEM;
    f->ops = o;
    o[f->nops++] = (op){kind, off, len};
    return 0;
}

int
pp_http_log_format_new(pp_http_log_format **out, const char *spec, const char **bad)
{
    static const char simple[] = "hlutrmUqHsbBDT";
    static const int kinds[] = {OP_HOST, OP_DASH, OP_DASH, OP_TIME, OP_REQUEST,
                                OP_METHOD, OP_PATH, OP_QUERY, OP_PROTO, OP_STATUS,
                                OP_BYTES_CLF, OP_BYTES, OP_USEC, OP_SEC};
    pp_http_log_format *f;
    size_t i, n;
    int rc = 0;

    *out = NULL;
    if (spec == NULL || strcmp(spec, "common") == 0)
        spec = LOG_COMMON;
    else if (strcmp(spec, "combined") == 0)
        spec = LOG_COMBINED;
    n = strlen(spec);
    if ((f = calloc(1, sizeof(*f))) == NULL || (f->text = strdup(spec)) == NULL) {
        free(f);
        return -ENOMEM;
    }
    for (i = 0; i < n && rc == 0; i++) {
        const char *d;
        if (spec[i] != '%') {
            rc = add_op(f, OP_TEXT, i, 1);
            continue;
        }
        if (i + 1 < n && spec[i + 1] == '%') {
            rc = add_op(f, OP_TEXT, ++i, 1);
        } else if (i + 1 < n && spec[i + 1] == '{') {
            const char *close = strstr(spec + i + 2, "}i");
            if (close == NULL || close == spec + i + 2 || memchr(spec + i + 2, '}',
                                                               (size_t)(close - spec - i - 2))) {
                rc = -EINVAL;
                break;
            }
            rc = add_op(f, OP_HEADER, i + 2, (size_t)(close - spec - i - 2));
            i = (size_t)(close - spec) + 1;
        } else if (i + 1 < n && spec[i + 1] && (d = strchr(simple, spec[i + 1])) != NULL) {
            rc = add_op(f, kinds[d - simple], 0, 0);
            i++;
        } else {
            rc = -EINVAL;
        }
    }
    if (rc < 0) {
        if (bad)
            *bad = spec + i;     /* never in the built-in formats */
        pp_http_log_format_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

void
pp_http_log_format_free(pp_http_log_format *f)
{
    if (f) {
        free(f->ops);
        free(f->text);
        free(f);
    }
}

/* ---- writing -------------------------------------------------------------------- */

void
pp_http_group_flush(pp_http_group *g)
{
    size_t off = 0;

    if (g->loop)
        pp_timer_stop(g->loop, &g->log_timer);
    while (g->log_fd >= 0 && off < g->log.len) {
        ssize_t n = write(g->log_fd, g->log.data + off, g->log.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;               /* a full disk loses lines, not requests */
        off += (size_t)n;
    }
    g->log.len = 0;
}

static void
log_fired(pp_loop *loop, pp_timer *t)
{
    (void)loop;
    pp_http_group_flush(t->data);
}

void
pp_http_group_set_log(pp_http_group *g, pp_loop *loop, int fd, const pp_http_log_format *f)
{
    g->log_fd = fd;
    g->log_format = f;
    g->loop = loop;
}

/* Client bytes: quotes, backslashes and control or non-ASCII bytes as
 * \xHH, so no request can forge a field or a line. */
static void
escaped(pp_buf *b, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x7f) {
            char esc[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            (void)pp_buf_put(b, esc, 4);
        } else {
            (void)pp_buf_put_u8(b, c);
        }
    }
}

static void
printed(pp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
printed(pp_buf *b, const char *fmt, ...)
{
    char tmp[96];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        (void)pp_buf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

void
pp__http_log_answer(pp_http_conn *hc, req *r, int status, int64_t length)
{
    pp_http_group *g = hc->g;
    const pp_http_log_format *f = g->log_format;
    const pp_http_request *q = &r->pub;
    pp_buf *b = &g->log;
    uint64_t took = r->t0 ? pp_now_ns() - r->t0 : 0;
    size_t i;

    for (i = 0; i < f->nops; i++) {
        const op *o = &f->ops[i];
        switch (o->kind) {
        case OP_TEXT:
            (void)pp_buf_put(b, f->text + o->off, o->len);
            break;
        case OP_HOST: {
            const char *peer = pp_http_conn_peer(hc, NULL);
            (void)pp_buf_put(b, *peer ? peer : "-", *peer ? strlen(peer) : 1);
            break;
        }
        case OP_DASH:
            (void)pp_buf_put_u8(b, '-');
            break;
        case OP_TIME: {
            time_t now = time(NULL);
            struct tm tm;
            gmtime_r(&now, &tm);
            printed(b, "[%02d/%s/%04d:%02d:%02d:%02d +0000]", tm.tm_mday,
                    pp__http_months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
                    tm.tm_min, tm.tm_sec);
            break;
        }
        case OP_REQUEST:
            if (q->method_len == 0) {
                (void)pp_buf_put_u8(b, '-');     /* refused before parsing */
                break;
            }
            escaped(b, q->method, q->method_len);
            (void)pp_buf_put_u8(b, ' ');
            escaped(b, q->target, q->target_len);
            printed(b, " HTTP/1.%d", q->version_minor);
            break;
        case OP_METHOD:
            escaped(b, q->method, q->method_len);
            break;
        case OP_PATH:
            escaped(b, q->path, q->path_len);
            break;
        case OP_QUERY:
            if (q->query_len) {
                (void)pp_buf_put_u8(b, '?');
                escaped(b, q->query, q->query_len);
            }
            break;
        case OP_PROTO:
            printed(b, "HTTP/1.%d", q->version_minor);
            break;
        case OP_STATUS:
            printed(b, "%d", status);
            break;
        case OP_BYTES_CLF:
            if (length > 0)
                printed(b, "%lld", (long long)length);
            else
                (void)pp_buf_put_u8(b, '-');
            break;
        case OP_BYTES:
            printed(b, "%lld", (long long)(length > 0 ? length : 0));
            break;
        case OP_USEC:
            printed(b, "%llu", (unsigned long long)(took / 1000));
            break;
        case OP_SEC:
            printed(b, "%llu.%03llu", (unsigned long long)(took / 1000000000u),
                    (unsigned long long)(took / 1000000u % 1000u));
            break;
        case OP_HEADER: {
            const pp_http_header *h = pp_http_find(q, f->text + o->off, o->len);
            if (h)
                escaped(b, h->value, h->value_len);
            else
                (void)pp_buf_put_u8(b, '-');
            break;
        }
        }
    }
    (void)pp_buf_put_u8(b, '\n');
    if (b->len >= LOG_FLUSH_AT)
        pp_http_group_flush(g);
    else if (g->loop && !pp_timer_active(&g->log_timer))
        (void)pp_timer_start(g->loop, &g->log_timer, 1000 * PP_NS_PER_MS, 0, log_fired, g);
}
