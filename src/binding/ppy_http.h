/* ppy_http.h -- HTTP endpoints in the binding: an app in each worker
 * interpreter, and the engine's requests turned into calls of it.
 *
 * A server of kind HTTP gives each worker a *site*: the engine's HTTP
 * group (limits, its connections) and the app as the worker's own
 * interpreter loaded it -- by name, from the same module main loaded it
 * from -- reading the server's frozen shared object by pointer.  Requests
 * are answered on the worker's loop thread, the handler called directly
 * (the fast path: no hand-off, no copy of the request).
 *
 * Two interfaces: native (http.c: routes, a Request object, return values
 * turned into responses) and WSGI (wsgi.c, PEP 3333).
 */
#ifndef PPY_HTTP_H
#define PPY_HTTP_H

#include "ppy_io.h"
#include "pp_http.h"

enum { PPY_HTTP_NATIVE = 0, PPY_HTTP_WSGI = 1 };

/* The fields of Response and FileResponse the binding reads. */
enum { F_STATUS, F_HEADERS, F_CONTENT_TYPE, F_BODY, F_PATH, F_OFFSET, F_LENGTH, F_COUNT };

/* environ keys and values a WSGI site makes once (wsgi.c). */
enum { W_REQUEST_METHOD, W_QUERY_STRING, W_RAW_URI, W_SERVER_PROTOCOL, W_PATH_INFO,
       W_CONTENT_LENGTH, W_CONTENT_TYPE, W_REMOTE_ADDR, W_REMOTE_PORT, W_INPUT,
       W_HTTP10, W_HTTP11, W_GET, W_POST, W_HEAD, W_EMPTY, W_COUNT };
#define PPY_WSGI_HEADER_KEYS 24  /* common request headers' HTTP_* keys */

/* An exact route by its raw path (native sites). */
typedef struct ppy_http_route {
    const char *path;            /* the key's UTF-8, owned by exact */
    size_t len;
    PyObject *handler;           /* borrowed from exact */
} ppy_http_route;

typedef struct ppy_http_site {
    pp_http_group group;         /* group.data: this site */
    ppy_endpoint *ep;            /* the worker's endpoint (close hooks) */
    ppy_lthread *lt;
    int interface;               /* PPY_HTTP_* */
    int debug;                   /* tracebacks in 500 answers */
    PyObject *app;               /* pyparallel.http.App, or the WSGI callable */
    PyObject *exact;             /* native: {path: handler} */
    PyObject *match;             /* native: app._match(path) -> (handler, kwargs) | None */
    PyObject *encode_json;       /* encode(obj, 0) -> chunks of JSON text */
    PyObject *zero;              /* 0, its second argument */
    PyObject *response_type;     /* pyparallel.http.Response */
    PyObject *file_type;         /* pyparallel.http.FileResponse */
    PyObject *request_type;      /* the Request type of this interpreter */
    PyObject *input_type;        /* wsgi.input's type */
    PyObject *start_response_type;
    PyObject *file_wrapper;      /* wsgi.file_wrapper */
    PyObject *errors;            /* wsgi.errors (sys.stderr) */
    PyObject *environ_base;      /* the keys every environ starts with */
    PyObject *shared;            /* frozen, or None */
    char server_port[8];
    uint64_t handler_errors;
    struct ppy_http_threads *threads;   /* --threads > 1, else NULL */
    ppy_http_route *routes;      /* exact routes, sorted by (len, bytes) */
    size_t nroutes;
    PyObject *names[F_COUNT];    /* interned field names */
    PyObject *wkeys[W_COUNT];    /* WSGI: interned environ keys, constants */
    PyObject *hkeys[PPY_WSGI_HEADER_KEYS];   /* WSGI: HTTP_HOST, ... */
    Py_ssize_t resp_off[F_COUNT], file_off[F_COUNT];   /* slot offsets, or -1 */
} ppy_http_site;

/* ---- handler threads (hthreads.c) ------------------------------------------ */

typedef struct ppy_http_threads ppy_http_threads;
typedef struct ppy_http_job ppy_http_job;

/* One request handed to a handler thread. */
struct ppy_http_job {
    ppy_http_job *next;
    ppy_http_site *site;
    pp_http_request *req;        /* held from ppy_http_job_new to the end */
    /* On a handler thread, the worker's GIL held: sets result, or leaves
     * an exception (saved into exc). */
    void (*run)(ppy_http_job *j);
    /* On the loop thread, GIL held: answers req from result or exc;
     * cancelled: run never ran (the site is going away). */
    void (*finish)(ppy_http_job *j, int cancelled);
    PyObject *args[4];           /* the job's own; released at the end */
    PyObject *result;
    PyObject *exc;
};

/* Starts n handler threads for s (loop thread, GIL held).  Returns 0, or
 * -1 with an exception set. */
int ppy_http_threads_start(ppy_http_site *s, int n);
/* Lets the threads finish what they run, answers what never ran (503),
 * and joins them.  Loop thread, GIL held (released while joining). */
void ppy_http_threads_stop(ppy_http_site *s);
/* A job for req (held now); NULL with MemoryError. */
ppy_http_job *ppy_http_job_new(ppy_http_site *s, pp_http_request *req,
                               void (*run)(ppy_http_job *),
                               void (*finish)(ppy_http_job *, int));
/* Queues j; it is finished and freed (args, result, the hold on req)
 * on the loop thread.  Returns 0. */
int ppy_http_threads_submit(ppy_http_site *s, ppy_http_job *j);

/* The engine handler for a site's group (data: the site). */
extern const pp_http_handler ppy_http_handler;

/* Loads the app named by spec in this worker and fills s (its group set
 * up by the caller).  Worker GIL.  Returns 0, or -1 with an exception
 * set. */
int ppy_http_site_init(ppy_http_site *s, ppy_lthread *lt, const char *spec,
                       int interface, PyObject *shared, int debug, int port);
void ppy_http_site_clear(ppy_http_site *s);

/* Answers req with status and a short text/plain body (an error page).
 * Worker GIL. */
void ppy_http_answer_text(pp_http_request *req, int status, const char *text);

/* Logs the pending exception as a handler's and answers 500 (with the
 * traceback when the site is in debug mode). */
void ppy_http_handler_failed(ppy_http_site *s, pp_http_request *req,
                             const char *what);

/* wsgi.c: one request through the WSGI app. */
void ppy_wsgi_call(ppy_http_site *s, pp_http_conn *hc, pp_http_request *req);
/* The connection drained: paused streamed answers go on (loop thread). */
void ppy_wsgi_writable(ppy_http_site *s, pp_http_conn *hc);
/* The connection closed: paused iterables are closed and dropped. */
void ppy_wsgi_conn_closed(ppy_http_site *s, pp_http_conn *hc);
/* Types and constants wsgi.c makes for a site (called by
 * ppy_http_site_init), and their end. */
int ppy_wsgi_site_init(ppy_http_site *s);
void ppy_wsgi_site_clear(ppy_http_site *s);

/* A bytes-like or str body's bytes for an answer: by reference for big
 * objects (the answer holds a reference and drops it when sent).  Fills
 * r->body/body_len/flags/release/ctx.  Returns 0, or -1 with TypeError. */
int ppy_http_body_of(PyObject *obj, pp_http_response *r);

/* Appends "Name: value\r\n" for each header (a dict, or an iterable of
 * (name, value) pairs of str), refusing CR, LF and NUL and leaving out
 * the ones the server sets itself (Content-Length, Transfer-Encoding,
 * Connection, Date, Server).  *has_type is set when Content-Type is
 * among them.  Returns 0, or -1 with an exception set. */
int ppy_http_header_lines(PyObject *headers, pp_buf *out, int *has_type);

/* The path percent-decoded once, as a str; latin1 gives PEP 3333's
 * bytes-as-latin-1 str, else UTF-8 with surrogate escapes.  New
 * reference. */
PyObject *ppy_http_decode_path(const char *p, size_t n, int latin1);

#endif /* PPY_HTTP_H */
