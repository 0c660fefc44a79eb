/* pp_http.h -- HTTP/1.1 connections on a pp_conn: framing, limits,
 * keep-alive, pipelining and the response head.  No Python here.
 *
 * An HTTP group is the server side of one worker: its connections, its
 * limits and counters.  Its pp_conn handler (pp_http_conn_handler, with the
 * group as the connection data) turns input into requests:
 *
 *   head     bytes up to the blank line, at most max_head of them, the
 *            request line at most max_line (else 431 / 414).  The whole
 *            head is checked before it is parsed -- every LF preceded by a
 *            CR, no CR alone, no obsolete line folding -- so what is not
 *            plainly one request is refused (400), never guessed at.  It is
 *            then copied into the request's own block and parsed there by
 *            llhttp (Node's parser), so every string of a request points
 *            into memory that lives as long as the request.
 *   framing  Content-Length, or chunked; both at once, two lengths, a bad
 *            length or chunk size: 400 and the connection is closed after
 *            it, nothing behind it read (no request smuggling).
 *   body     collected up to max_body (else 413), in memory up to
 *            body_spill bytes and in an unlinked temporary file beyond,
 *            so a big upload never sits in memory whole.
 *   dispatch on_request(hc, req) once head and body are complete.  The
 *            owner answers -- now or later, but on the loop's thread --
 *            with pp_http_respond() (and, for a streamed body,
 *            pp_http_send() and pp_http_end()).
 *
 * Pipelining: the requests of one read pass are dispatched one after the
 * other, and responses go out in request order whatever order they are
 * given in: a response for a request behind one not yet answered is kept
 * until its turn.  What the owner answers during the read pass leaves in
 * one sendmsg(2) at its end (pp_conn).  At most max_pipeline requests wait
 * for answers; input behind them waits in the connection's buffer.
 *
 * Every response gets Server and a Date cached per second, Content-Length
 * (or chunked transfer coding for a streamed body of unknown length), and
 * Connection: close when the connection closes after it: the client asked
 * for it, HTTP/1.0 without keep-alive, an error, or a drain.  HEAD gets
 * the head alone; 1xx, 204 and 304 never get a body.
 *
 * Timeouts (one timer per connection, for the phase it is in): a request
 * head must arrive whole within head_timeout of its first byte (slowloris:
 * 408), a body within body_timeout of its head (408); a kept-alive
 * connection with nothing in flight is closed after keepalive_timeout; a
 * reader too slow to take its response (no progress for send_timeout)
 * is dropped.
 *
 * Errors: 0 or -errno.  Everything runs on the loop's thread.
 */
#ifndef PP_HTTP_H
#define PP_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "pp_buf.h"
#include "pp_conn.h"

typedef struct pp_http_group pp_http_group;
typedef struct pp_http_conn pp_http_conn;
typedef struct pp_http_request pp_http_request;
typedef struct pp_http_log_format pp_http_log_format;

typedef struct pp_http_config {
    size_t max_line;             /* request line (8 KiB): 414 */
    size_t max_head;             /* whole head (64 KiB): 431 */
    size_t max_headers;          /* header fields (100): 431 */
    uint64_t max_body;           /* request body (16 MiB): 413 */
    size_t body_spill;           /* body bytes kept in memory (1 MiB) */
    unsigned max_pipeline;       /* requests awaiting answers (64) */
    uint64_t head_timeout_ns;    /* 10 s: 408 */
    uint64_t body_timeout_ns;    /* 30 s: 408 */
    uint64_t keepalive_timeout_ns;  /* 5 s */
    uint64_t send_timeout_ns;    /* 30 s */
    const char *server;          /* the Server header ("pyparallel") */
} pp_http_config;

void pp_http_config_default(pp_http_config *cfg);

typedef struct pp_http_stats {
    uint64_t requests;           /* dispatched to the owner */
    uint64_t responses;          /* heads written */
    uint64_t status[6];          /* responses by class: [1]..[5] */
    uint64_t rejected;           /* refused by this layer (4xx) */
    uint64_t timeouts;           /* 408s and dropped slow readers */
    uint64_t pipelined_max;      /* most requests in flight on one conn */
} pp_http_stats;

/* A header field as received: name and value, value without surrounding
 * whitespace.  Not NUL-terminated. */
typedef struct pp_http_header {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
} pp_http_header;

/* Request flags. */
#define PP_HTTP_KEEP_ALIVE 1u    /* the connection may carry another */
#define PP_HTTP_HEAD 2u          /* method HEAD: no body in the answer */
#define PP_HTTP_CHUNKED 4u       /* the body came chunked */

struct pp_http_request {
    /* The head; every string points into the request's own block. */
    const char *method;
    const char *target;          /* the request-target, as sent */
    const char *path;            /* target up to '?' (not decoded) */
    const char *query;           /* after '?' ("" when none) */
    uint32_t method_len, target_len, path_len, query_len;
    int version_minor;           /* HTTP/1.x */
    unsigned flags;              /* PP_HTTP_* */
    const pp_http_header *headers;
    size_t nheaders;
    /* The body: body_len bytes at body, or, when body_fd >= 0, in that
     * file (unlinked, read it with pread from 0; the request closes it). */
    const char *body;
    uint64_t body_len;
    int body_fd;
    uint64_t seq;                /* 0, 1, ... on its connection */
    pp_http_conn *conn;          /* NULL once the connection has closed */
    void *data;                  /* the owner's */
};

/* Looks a header up by name, case-insensitively: the first one, or NULL. */
const pp_http_header *pp_http_find(const pp_http_request *req,
                                   const char *name, size_t name_len);

/* The owner's callbacks (pp_http_group_init).  on_request is required. */
typedef struct pp_http_handler {
    /* A complete request.  Answer it with pp_http_respond() exactly once
     * (now or later, on the loop's thread).  A request not answered when
     * its connection closes stays valid until pp_http_release(). */
    void (*on_request)(pp_http_conn *hc, pp_http_request *req);
    /* The owner's hooks on a connection's life (may be NULL).  on_close
     * runs before the requests still held are cut loose. */
    void (*on_open)(pp_http_conn *hc);
    void (*on_close)(pp_http_conn *hc, int err);
    /* The connection's output drained to its low-water mark after
     * pp_http_send() returned 1: a streamed answer may go on (may be
     * NULL). */
    void (*on_writable)(pp_http_conn *hc);
} pp_http_handler;

struct pp_http_group {
    pp_conn_group *conns;        /* where the connections live */
    pp_http_config cfg;
    const pp_http_handler *h;
    void *data;                  /* the owner's */
    pp_http_stats stats;
    size_t count;                /* HTTP connections open */
    int draining;                /* pp_http_group_drain() was called */
    /* Private. */
    pp_link list;
    size_t server_len;
    int log_fd;                  /* access log, or -1 */
    const pp_http_log_format *log_format;
    pp_buf log;                  /* lines not yet written */
    pp_timer log_timer;
    pp_loop *loop;
    time_t date_sec;             /* the Date this group last formatted */
    char date[32];
    struct pp_http_static *const *statics;   /* pp_http_group_set_static */
    size_t nstatics;
};

/* ---- the access log --------------------------------------------------------- */

/* Compiles an access-log line format: "common" (%h %l %u %t "%r" %s %b),
 * "combined" (common + "%{Referer}i" "%{User-Agent}i"), or text with
 * Apache/gunicorn-style directives:
 *   %h client address   %l %u "-"          %t [10/Oct/2000:13:55:36 +0000]
 *   %r request line     %m method  %U path  %q ?query (or "")  %H protocol
 *   %s status           %b bytes ("-" when 0 or unknown)  %B bytes (0)
 *   %D microseconds from the request's dispatch to its answer
 *   %T the same in seconds (with 3 decimals)   %{Name}i a request header
 *   %% a percent sign
 * Client bytes are written with quotes, backslashes, control and non-ASCII
 * bytes as \xHH, so no request can forge a field or a line.  Returns 0, or
 * -EINVAL with *bad at the directive it does not know, or -ENOMEM. */
int pp_http_log_format_new(pp_http_log_format **out, const char *spec,
                           const char **bad);
void pp_http_log_format_free(pp_http_log_format *f);

/* Logs every answer to fd (not owned; opened O_APPEND by the caller) in
 * format f (not owned; may be shared by groups).  Lines are formatted
 * into the group's buffer -- nothing is shared between groups, so no lock
 * -- and written with one write(2) when it holds 32 KiB, a second after
 * its first line, and at pp_http_group_flush(). */
void pp_http_group_set_log(pp_http_group *g, pp_loop *loop, int fd,
                           const pp_http_log_format *f);

/* Writes what the access log holds and stops its timer (before the group
 * goes). */
void pp_http_group_flush(pp_http_group *g);

/* The pp_conn handler for accepted connections (pp_acceptor_start with
 * data = the pp_http_group). */
extern const pp_conn_handler pp_http_conn_handler;

/* cfg NULL: defaults.  The group stays the caller's; it must outlive its
 * connections. */
void pp_http_group_init(pp_http_group *g, pp_conn_group *conns,
                        const pp_http_config *cfg, const pp_http_handler *h,
                        void *data);

/* Graceful drain: connections with nothing in flight close now; the
 * others finish what they have (answers say Connection: close) and read
 * no further request.  Stopping the acceptors is the caller's part. */
void pp_http_group_drain(pp_http_group *g);

/* ---- answering ------------------------------------------------------------ */

/* Response flags. */
#define PP_HTTP_CLOSE 1u         /* close the connection after it */
#define PP_HTTP_STREAM 2u        /* more body follows (pp_http_send) */
#define PP_HTTP_BODY_REF 4u      /* body by reference: release(ctx) */

typedef struct pp_http_response {
    int status;
    unsigned flags;              /* PP_HTTP_CLOSE, _STREAM, _BODY_REF */
    const char *content_type;    /* NULL: no Content-Type */
    size_t content_type_len;
    /* Further header lines, each "Name: value\r\n", checked by the
     * caller: no CR or LF inside a name or value. */
    const char *headers;
    size_t headers_len;
    const void *body;
    size_t body_len;
    pp_release_proc release;     /* PP_HTTP_BODY_REF */
    void *ctx;
    /* A file range (fd >= 0): sent with sendfile after the body bytes;
     * the response owns fd from here on, whatever the outcome. */
    int file_fd;
    off_t file_offset;
    size_t file_count;
    /* With PP_HTTP_STREAM: the whole length if known (Content-Length),
     * or -1: chunked (HTTP/1.1) or close-delimited (HTTP/1.0). */
    int64_t content_length;
} pp_http_response;

/* Initialises r: status, no content, file_fd -1, content_length -1. */
void pp_http_response_init(pp_http_response *r, int status);

/* Answers req.  Returns 0, or -EPIPE when its connection has closed (the
 * body's release and the file are still seen to), -EINVAL when req was
 * answered already, -ENOMEM. */
int pp_http_respond(pp_http_request *req, const pp_http_response *r);

/* More body for a PP_HTTP_STREAM response, then its end.  Return as
 * pp_http_respond().  pp_http_send() returns 1 when the connection's
 * output is above its high-water mark (stop producing for now). */
int pp_http_send(pp_http_request *req, const void *data, size_t len);
int pp_http_end(pp_http_request *req);

/* Holding a request beyond on_request (an answer given later): hold
 * before on_request returns, release when done with it, answered or not. */
void pp_http_hold(pp_http_request *req);
void pp_http_release(pp_http_request *req);

/* ---- connections ----------------------------------------------------------- */

pp_conn *pp_http_conn_pp(const pp_http_conn *hc);
pp_http_group *pp_http_conn_group(const pp_http_conn *hc);
void *pp_http_conn_data(const pp_http_conn *hc);
void pp_http_conn_set_data(pp_http_conn *hc, void *data);
/* The peer's address as text ("203.0.113.7", "::1", "" for Unix sockets)
 * and port (0 for Unix), found once per connection. */
const char *pp_http_conn_peer(pp_http_conn *hc, int *port);

/* ---- helpers -------------------------------------------------------------- */

/* The reason phrase for a status ("Unknown" for codes it does not know). */
const char *pp_http_reason(int status);

/* t as an IMF-fixdate into buf (NUL-terminated). */
void pp_http_format_date(time_t t, char buf[32]);

#endif /* PP_HTTP_H */
