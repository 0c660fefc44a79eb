/* http_internal.h -- what http.c (input: framing, parsing, dispatch) and
 * http_response.c (output: heads, ordering, streaming) share.  Not part of
 * the API.  No Python here. */
#ifndef PP_HTTP_INTERNAL_H
#define PP_HTTP_INTERNAL_H

#include <llhttp.h>

#include "pp_buf.h"
#include "pp_http.h"

/* Output kept for a request that is not at the head of the line yet. */
typedef struct piece {
    struct piece *next;
    int fd;                      /* >= 0: a file range */
    off_t offset;
    size_t len;                  /* bytes, or the file range's count */
    pp_release_proc release;     /* bytes by reference (fd < 0) */
    void *ctx;
    const char *p;               /* the bytes (copied ones follow the
                                    struct) */
} piece;

/* Answer states. */
enum { ANS_NONE, ANS_STREAM, ANS_DONE };

typedef struct req {
    pp_http_request pub;         /* first */
    struct req *next;            /* in the connection's line */
    int refs;
    int answer;                  /* ANS_* */
    int close_after;             /* Connection: close was said */
    int no_body;                 /* HEAD, 1xx, 204, 304: head only */
    int chunked_out;             /* the answer uses chunked coding */
    int complete;                /* head and body received */
    piece *pieces, **tail;       /* output waiting for its turn */
    pp_buf body;                 /* the body in memory */
    pp_http_header *hdr;
    size_t nhdr, hdr_cap;
    int last_was_value;          /* parsing: next field starts a header */
    int in_trailers;
    int expect_continue;
    size_t head_len;
    uint64_t t0;                 /* pp_now_ns() at dispatch (access log on) */
    char head[];                 /* the head, copied */
} req;

/* Connection flags. */
#define HC_NO_MORE 1u            /* read no further request */
#define HC_CLOSED 2u             /* the pp_conn is gone */
#define HC_READ_PAUSED 4u        /* by us: the line is full */
#define HC_IN_READ 8u            /* inside on_read */
#define HC_IDLE_OFF 16u          /* the pp_conn's idle timeout is off */

/* Timer phases. */
enum { PH_NONE, PH_KEEPALIVE, PH_HEAD, PH_BODY };

struct pp_http_conn {
    pp_conn *c;
    pp_http_group *g;
    llhttp_t parser;
    pp_timer timer;
    uint64_t deadline;           /* for phase; the timer may be earlier */
    int phase;
    unsigned flags;
    pp_link link;                /* in g->list */
    void *data;
    req *parsing;                /* head parsed, body coming */
    req *first, *last;           /* the line: requests not fully answered */
    unsigned inflight;
    uint64_t seq;
    size_t scanned;              /* head bytes already checked */
    size_t lines_ok;             /* ... of which whole lines */
    int err_status;              /* set by a parser callback that fails */
    char *peer;                  /* pp_http_conn_peer(), found once */
    int peer_port;
};

/* http_response.c */
/* Refuses the request being read with status (and closes after it, in
 * its turn in the line). */
void pp__http_error(pp_http_conn *hc, int status);
/* Drops one reference; the last frees the request. */
void pp__http_unref(req *r);

/* "Jan".."Dec" (http_response.c). */
extern const char pp__http_months[12][4];

/* Appends the access-log line for r's answer to its group's buffer
 * (http_log.c); length -1 when not known (streamed). */
void pp__http_log_answer(pp_http_conn *hc, req *r, int status, int64_t length);
/* Sends what the head of the line has, pops what is answered, and closes
 * or goes back to reading as the line allows. */
void pp__http_advance(pp_http_conn *hc);
/* The connection is gone: every request in the line is cut loose. */
void pp__http_cut_loose(pp_http_conn *hc);
/* Back to waiting for input (timer phase, idle timeout, paused reads). */
void pp__http_idle(pp_http_conn *hc);

static inline req *
pp__req(pp_http_request *r)
{
    return (req *)r;
}

#endif /* PP_HTTP_INTERNAL_H */
