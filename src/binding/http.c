/* http.c -- the native HTTP interface: a site per worker, routes, the
 * Request object, and a handler's return value turned into an answer.
 *
 * On the loop thread, per request: the path is percent-decoded once and
 * looked up in the app's exact routes (a dict), else handed to the app's
 * pattern matcher; the handler is called with a Request -- a thin object
 * over the engine's request, whose attributes are made when first read --
 * and what it returns becomes the answer:
 *
 *   bytes-like  text/plain            str        text/html; charset=utf-8
 *   dict, list  application/json      None       204
 *   Response    its own status, headers and body
 *   FileResponse  the file, sent with sendfile(2)
 *
 * An exception is logged once with its traceback and answered 500 (with
 * the traceback only when the server runs with debug).
 */
#include "ppy_http.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bodies this big or bigger are sent from the object itself. */
#define BODY_REF_MIN 4096

/* ---- the Request object ------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    pp_http_request *req;        /* held until the object goes */
    ppy_http_site *site;
    PyObject *path, *headers, *body, *query_params;
} ppy_request;

static void
release_ref(void *ctx)
{
    Py_DECREF((PyObject *)ctx);
}

static int
hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The path, percent-decoded once, as UTF-8 (undecodable bytes as
 * surrogate escapes, so no path is lost).  New reference. */
PyObject *
ppy_http_decode_path(const char *p, size_t n, int latin1)
{
    char stack[512], *buf;
    size_t i, k = 0;
    PyObject *res;

    if (memchr(p, '%', n) == NULL)
        return latin1 ? PyUnicode_DecodeLatin1(p, (Py_ssize_t)n, NULL)
                      : PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "surrogateescape");
    buf = n <= sizeof stack ? stack : malloc(n);
    if (buf == NULL)
        return PyErr_NoMemory();
    for (i = 0; i < n; i++) {
        int hi, lo;
        if (p[i] == '%' && i + 2 < n && (hi = hexval(p[i + 1])) >= 0 &&
            (lo = hexval(p[i + 2])) >= 0) {
            buf[k++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            buf[k++] = p[i];     /* a stray '%' stays as it is */
        }
    }
    res = latin1 ? PyUnicode_DecodeLatin1(buf, (Py_ssize_t)k, NULL)
                 : PyUnicode_DecodeUTF8(buf, (Py_ssize_t)k, "surrogateescape");
    if (buf != stack)
        free(buf);
    return res;
}

static PyObject *
request_new(ppy_http_site *s, pp_http_request *req, PyObject *path)
{
    ppy_request *r = PyObject_GC_New(ppy_request, (PyTypeObject *)s->request_type);

    if (r == NULL)
        return NULL;
    pp_http_hold(req);
    r->req = req;
    r->site = s;
    r->path = Py_XNewRef(path);  /* NULL: made when asked for */
    r->headers = r->body = r->query_params = NULL;
    PyObject_GC_Track(r);
    return (PyObject *)r;
}

static int
request_traverse(ppy_request *r, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(r));
    Py_VISIT(r->path);
    Py_VISIT(r->headers);
    Py_VISIT(r->body);
    Py_VISIT(r->query_params);
    return 0;
}

static int
request_clear(ppy_request *r)
{
    Py_CLEAR(r->path);
    Py_CLEAR(r->headers);
    Py_CLEAR(r->body);
    Py_CLEAR(r->query_params);
    return 0;
}

static void
request_dealloc(ppy_request *r)
{
    PyTypeObject *tp = Py_TYPE(r);

    PyObject_GC_UnTrack(r);
    request_clear(r);
    if (r->req)
        pp_http_release(r->req);
    tp->tp_free(r);
    Py_DECREF(tp);
}

static PyObject *
latin1(const char *p, size_t n)
{
    return PyUnicode_DecodeLatin1(p, (Py_ssize_t)n, NULL);
}

static PyObject *
req_method(ppy_request *r, void *c)
{
    (void)c;
    return latin1(r->req->method, r->req->method_len);
}

static PyObject *
req_path(ppy_request *r, void *c)
{
    (void)c;
    if (r->path == NULL &&
        (r->path = ppy_http_decode_path(r->req->path, r->req->path_len, 0)) == NULL)
        return NULL;
    return Py_NewRef(r->path);
}

static PyObject *
req_raw_path(ppy_request *r, void *c)
{
    (void)c;
    return PyBytes_FromStringAndSize(r->req->path, r->req->path_len);
}

static PyObject *
req_query(ppy_request *r, void *c)
{
    (void)c;
    return latin1(r->req->query, r->req->query_len);
}

static PyObject *
req_version(ppy_request *r, void *c)
{
    (void)c;
    return PyUnicode_FromFormat("HTTP/1.%d", r->req->version_minor);
}

/* {lower-case name: value}; repeated fields joined with ", " (RFC 9110
 * 5.3). */
static PyObject *
req_headers(ppy_request *r, void *c)
{
    size_t i;

    (void)c;
    if (r->headers)
        return Py_NewRef(r->headers);
    if ((r->headers = PyDict_New()) == NULL)
        return NULL;
    for (i = 0; i < r->req->nheaders; i++) {
        const pp_http_header *h = &r->req->headers[i];
        PyObject *k = latin1(h->name, h->name_len), *v, *old, *lk;
        if (k == NULL)
            goto fail;
        lk = PyObject_CallMethod(k, "lower", NULL);
        Py_DECREF(k);
        if (lk == NULL || (v = latin1(h->value, h->value_len)) == NULL) {
            Py_XDECREF(lk);
            goto fail;
        }
        old = PyDict_GetItemWithError(r->headers, lk);
        if (old)
            Py_SETREF(v, PyUnicode_FromFormat("%U, %U", old, v));
        if (v == NULL || PyDict_SetItem(r->headers, lk, v) < 0) {
            Py_DECREF(lk);
            Py_XDECREF(v);
            goto fail;
        }
        Py_DECREF(lk);
        Py_DECREF(v);
    }
    return Py_NewRef(r->headers);
fail:
    Py_CLEAR(r->headers);
    return NULL;
}

static PyObject *
req_body(ppy_request *r, void *c)
{
    pp_http_request *q = r->req;

    (void)c;
    if (r->body)
        return Py_NewRef(r->body);
    if (q->body_fd < 0) {
        r->body = PyBytes_FromStringAndSize(q->body, (Py_ssize_t)q->body_len);
    } else {
        /* Spilled to a file: read it back whole, since .body asked. */
        PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)q->body_len);
        size_t off = 0;
        while (b && off < q->body_len) {
            ssize_t n = pread(q->body_fd, PyBytes_AS_STRING(b) + off,
                              q->body_len - off, (off_t)off);
            if (n <= 0) {
                Py_CLEAR(b);
                PyErr_SetString(PyExc_OSError, "could not read the request body back");
            } else {
                off += (size_t)n;
            }
        }
        r->body = b;
    }
    return r->body ? Py_NewRef(r->body) : NULL;
}

static PyObject *
req_query_params(ppy_request *r, void *c)
{
    PyObject *mod, *q;

    (void)c;
    if (r->query_params)
        return Py_NewRef(r->query_params);
    if ((q = req_query(r, NULL)) == NULL)
        return NULL;
    if ((mod = PyImport_ImportModule("urllib.parse")) != NULL) {
        PyObject *pairs = PyObject_CallMethod(mod, "parse_qsl", "O", q);
        if (pairs) {
            r->query_params = PyDict_New();
            for (Py_ssize_t i = 0; r->query_params && i < PyList_GET_SIZE(pairs); i++) {
                PyObject *kv = PyList_GET_ITEM(pairs, i);
                /* The first value of a name wins. */
                if (PyDict_SetDefault(r->query_params, PyTuple_GET_ITEM(kv, 0),
                                      PyTuple_GET_ITEM(kv, 1)) == NULL)
                    Py_CLEAR(r->query_params);
            }
            Py_DECREF(pairs);
        }
        Py_DECREF(mod);
    }
    Py_DECREF(q);
    return r->query_params ? Py_NewRef(r->query_params) : NULL;
}

static PyObject *
req_client(ppy_request *r, void *c)
{
    int port = 0;
    const char *host;

    (void)c;
    if (r->req->conn == NULL)
        Py_RETURN_NONE;
    host = pp_http_conn_peer(r->req->conn, &port);
    return Py_BuildValue("(si)", host, port);
}

static PyObject *
req_shared(ppy_request *r, void *c)
{
    (void)c;
    return Py_NewRef(r->site->shared);
}

static PyObject *
req_keep_alive(ppy_request *r, void *c)
{
    (void)c;
    return PyBool_FromLong((r->req->flags & PP_HTTP_KEEP_ALIVE) != 0);
}

static PyObject *
req_repr(ppy_request *r)
{
    return PyUnicode_FromFormat("<pyparallel.http.Request %.*s %.*s>",
                                (int)r->req->method_len, r->req->method,
                                (int)r->req->path_len, r->req->path);
}

static PyGetSetDef request_getset[] = {
    {"method", (getter)req_method, NULL, "the method, as sent (str)", NULL},
    {"path", (getter)req_path, NULL, "the path, percent-decoded once (str)", NULL},
    {"raw_path", (getter)req_raw_path, NULL, "the path as sent (bytes)", NULL},
    {"query", (getter)req_query, NULL, "the query string, not decoded (str, '' when none)", NULL},
    {"query_params", (getter)req_query_params, NULL, "the query as {name: first value} (decoded)", NULL},
    {"version", (getter)req_version, NULL, "'HTTP/1.1' or 'HTTP/1.0'", NULL},
    {"headers", (getter)req_headers, NULL, "{lower-case name: value}", NULL},
    {"body", (getter)req_body, NULL, "the request body (bytes)", NULL},
    {"client", (getter)req_client, NULL, "(address, port) of the peer", NULL},
    {"shared", (getter)req_shared, NULL, "the app's frozen shared data (or None)", NULL},
    {"keep_alive", (getter)req_keep_alive, NULL, "the connection may carry another request", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot request_slots[] = {
    {Py_tp_dealloc, request_dealloc},
    {Py_tp_traverse, request_traverse},
    {Py_tp_clear, request_clear},
    {Py_tp_getset, request_getset},
    {Py_tp_repr, req_repr},
    {Py_tp_doc, "An HTTP request, as a native handler gets it."},
    {0, NULL}
};

static PyType_Spec request_spec = {
    .name = "pyparallel.http.Request",
    .basicsize = sizeof(ppy_request),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = request_slots,
};

/* ---- answers ------------------------------------------------------------------ */

void
ppy_http_answer_text(pp_http_request *req, int status, const char *text)
{
    pp_http_response r;

    pp_http_response_init(&r, status);
    r.content_type = "text/plain; charset=utf-8";
    r.content_type_len = strlen(r.content_type);
    r.body = text;
    r.body_len = strlen(text);
    (void)pp_http_respond(req, &r);
}

void
ppy_http_handler_failed(ppy_http_site *s, pp_http_request *req, const char *what)
{
    PyObject *exc = PyErr_GetRaisedException(), *about, *text = NULL;

    s->handler_errors++;
    s->ep->errors++;
    if (s->debug && exc) {
        PyObject *tb = PyImport_ImportModule("traceback");
        if (tb) {
            PyObject *lines = PyObject_CallMethod(tb, "format_exception", "O", exc);
            if (lines) {
                PyObject *empty = PyUnicode_FromString("");
                text = empty ? PyUnicode_Join(empty, lines) : NULL;
                Py_XDECREF(empty);
                Py_DECREF(lines);
            }
            Py_DECREF(tb);
        }
        PyErr_Clear();
    }
    about = PyUnicode_FromFormat("%.*s %.*s", (int)req->method_len, req->method,
                                 (int)req->target_len, req->target);
    if (about == NULL)
        PyErr_Clear();
    PyErr_SetRaisedException(exc);
    ppy_lthread_log_error(s->lt, what, about);
    Py_XDECREF(about);
    if (text) {
        const char *t = PyUnicode_AsUTF8(text);
        ppy_http_answer_text(req, 500, t ? t : "500 Internal Server Error\n");
        PyErr_Clear();
        Py_DECREF(text);
    } else {
        ppy_http_answer_text(req, 500, "500 Internal Server Error\n");
    }
}

int
ppy_http_body_of(PyObject *obj, pp_http_response *r)
{
    const char *p;
    Py_ssize_t n;

    if (PyBytes_Check(obj)) {
        p = PyBytes_AS_STRING(obj);
        n = PyBytes_GET_SIZE(obj);
    } else if (PyUnicode_Check(obj)) {
        if ((p = PyUnicode_AsUTF8AndSize(obj, &n)) == NULL)
            return -1;
    } else if (PyByteArray_Check(obj)) {
        /* Mutable: copied now, whatever happens to it later. */
        r->body = PyByteArray_AS_STRING(obj);
        r->body_len = (size_t)PyByteArray_GET_SIZE(obj);
        return 0;
    } else if (PyMemoryView_Check(obj)) {
        Py_buffer *b = PyMemoryView_GET_BUFFER(obj);
        if (!PyBuffer_IsContiguous(b, 'C')) {
            PyErr_SetString(PyExc_TypeError, "a response body memoryview must be contiguous");
            return -1;
        }
        r->body = b->buf;
        r->body_len = (size_t)b->len;
        return 0;
    } else {
        PyErr_Format(PyExc_TypeError, "a response body must be bytes, str, "
                     "bytearray or memoryview, not %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    r->body = p;
    r->body_len = (size_t)n;
    if (n >= BODY_REF_MIN) {
        r->flags |= PP_HTTP_BODY_REF;
        r->release = release_ref;
        r->ctx = Py_NewRef(obj);
    }
    return 0;
}

int
ppy_http_header_lines(PyObject *headers, pp_buf *out, int *has_type)
{
    PyObject *items, *it, *pair;
    int rc = -1;

    if (headers == Py_None)
        return 0;
    items = PyDict_Check(headers) ? PyDict_Items(headers) : Py_NewRef(headers);
    if (items == NULL || (it = PyObject_GetIter(items)) == NULL) {
        Py_XDECREF(items);
        return -1;
    }
    while ((pair = PyIter_Next(it)) != NULL) {
        PyObject *k, *v;
        const char *ks, *vs;
        Py_ssize_t kn, vn;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyUnicode_Check(k = PyTuple_GET_ITEM(pair, 0)) ||
            !PyUnicode_Check(v = PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "response headers must be a dict "
                            "or (name, value) pairs of str");
            Py_DECREF(pair);
            goto done;
        }
        if ((ks = PyUnicode_AsUTF8AndSize(k, &kn)) == NULL ||
            (vs = PyUnicode_AsUTF8AndSize(v, &vn)) == NULL) {
            Py_DECREF(pair);
            goto done;
        }
        if (kn == 0 || strpbrk(ks, "\r\n: \t") || (Py_ssize_t)strlen(ks) != kn ||
            strpbrk(vs, "\r\n") || (Py_ssize_t)strlen(vs) != vn) {
            PyErr_Format(PyExc_ValueError, "invalid response header %R: %R "
                         "(names are tokens; no CR, LF or NUL anywhere)", k, v);
            Py_DECREF(pair);
            goto done;
        }
        if (kn == 12 && strncasecmp(ks, "content-type", 12) == 0)
            *has_type = 1;
        if ((kn == 14 && strncasecmp(ks, "content-length", 14) == 0) ||
            (kn == 17 && strncasecmp(ks, "transfer-encoding", 17) == 0) ||
            (kn == 10 && strncasecmp(ks, "connection", 10) == 0) ||
            (kn == 4 && strncasecmp(ks, "date", 4) == 0) ||
            (kn == 6 && strncasecmp(ks, "server", 6) == 0)) {
            Py_DECREF(pair);
            continue;            /* the server's to set */
        }
        if (pp_buf_put(out, ks, (size_t)kn) < 0 || pp_buf_put(out, ": ", 2) < 0 ||
            pp_buf_put(out, vs, (size_t)vn) < 0 || pp_buf_put(out, "\r\n", 2) < 0) {
            PyErr_NoMemory();
            Py_DECREF(pair);
            goto done;
        }
        Py_DECREF(pair);
    }
    rc = PyErr_Occurred() ? -1 : 0;
done:
    Py_DECREF(it);
    Py_DECREF(items);
    return rc;
}

#define CT_TEXT "text/plain; charset=utf-8"
#define CT_HTML "text/html; charset=utf-8"
#define CT_JSON "application/json"

/* v as JSON text: the stdlib's C encoder called directly (no
 * JSONEncoder.encode per answer), its chunks joined. */
static PyObject *
to_json(ppy_http_site *s, PyObject *v)
{
    PyObject *args[2] = {v, s->zero}, *chunks, *r;

    if ((chunks = PyObject_Vectorcall(s->encode_json, args, 2, NULL)) == NULL)
        return NULL;
    if (PyTuple_CheckExact(chunks) && PyTuple_GET_SIZE(chunks) == 1 &&
        PyUnicode_CheckExact(PyTuple_GET_ITEM(chunks, 0))) {
        r = Py_NewRef(PyTuple_GET_ITEM(chunks, 0));
    } else {
        PyObject *empty = PyUnicode_FromStringAndSize("", 0);
        r = empty ? PyUnicode_Join(empty, chunks) : NULL;
        Py_XDECREF(empty);
    }
    Py_DECREF(chunks);
    return r;
}

/* Sets the body and default content type for a plain value.  obj_out
 * keeps alive what the body points into.  Returns 0, or -1. */
static int
plain_body(ppy_http_site *s, PyObject *v, pp_http_response *r, const char **ct,
           PyObject **keep)
{
    if (PyBytes_Check(v) || PyByteArray_Check(v) || PyMemoryView_Check(v)) {
        *ct = CT_TEXT;
    } else if (PyUnicode_Check(v)) {
        *ct = CT_HTML;
    } else if (PyDict_Check(v) || PyList_Check(v) || PyTuple_Check(v) ||
               PyObject_TypeCheck(v, &PyDict_Type)) {
        PyObject *j = to_json(s, v);
        if (j == NULL)
            return -1;
        *ct = CT_JSON;
        *keep = j;
        v = j;
    } else if (v == Py_None) {
        return 0;
    } else if (PyObject_TypeCheck(v, (PyTypeObject *)&PyDict_Type) == 0 &&
               PyMapping_Check(v) && PyObject_HasAttrString(v, "keys")) {
        /* A FrozenMap or another Mapping: JSON too. */
        PyObject *j = to_json(s, v);
        if (j == NULL)
            return -1;
        *ct = CT_JSON;
        *keep = j;
        v = j;
    } else {
        PyErr_Format(PyExc_TypeError, "a handler returned %.100s: return bytes, "
                     "str, a dict or list (JSON), None, a Response or a "
                     "FileResponse", Py_TYPE(v)->tp_name);
        return -1;
    }
    return ppy_http_body_of(v, r);
}

/* A FileResponse's part of the file: offset, and length (None: to the
 * end).  Out of range is a ValueError, not a short answer. */
static int
file_part(PyObject *offset, PyObject *length, off_t size, pp_http_response *r)
{
    long long off = PyLong_AsLongLong(offset), len;

    if (off == -1 && PyErr_Occurred())
        return -1;
    if (length == Py_None) {
        len = (long long)size - off;
    } else if ((len = PyLong_AsLongLong(length)) == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (off < 0 || len < 0 || off > (long long)size || len > (long long)size - off) {
        PyErr_Format(PyExc_ValueError, "FileResponse: bytes %lld-%lld lie outside the "
                     "file's %lld", off, off + len, (long long)size);
        return -1;
    }
    r->file_offset = (off_t)off;
    r->file_count = (size_t)len;
    return 0;
}

static int
open_file(PyObject *path, PyObject *offset, PyObject *length, pp_http_response *r)
{
    PyObject *b;
    struct stat st;
    int fd;

    if (!PyUnicode_FSConverter(path, &b))
        return -1;
    fd = open(PyBytes_AS_STRING(b), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) {
            close(fd);
            errno = EISDIR;
        }
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        Py_DECREF(b);
        return -1;
    }
    Py_DECREF(b);
    if (file_part(offset, length, st.st_size, r) < 0) {
        close(fd);
        return -1;
    }
    r->file_fd = fd;
    return 0;
}

/* A Response's or FileResponse's field (new reference): read from its
 * slot when v is exactly that class (the offsets found at site set-up),
 * else looked up by its interned name (a subclass may make it a
 * property). */
static PyObject *
field(ppy_http_site *s, PyObject *v, const Py_ssize_t *off, int i)
{
    if (off[i] >= 0 && (Py_TYPE(v) == (PyTypeObject *)s->response_type ||
                        Py_TYPE(v) == (PyTypeObject *)s->file_type)) {
        PyObject *x = *(PyObject **)((char *)v + off[i]);
        if (x)
            return Py_NewRef(x);
    }
    return PyObject_GetAttr(v, s->names[i]);
}

/* Turns a handler's return value into the answer to req.  Returns 0, or
 * -1 with an exception set (nothing answered). */
static int
answer_value(ppy_http_site *s, pp_http_request *req, PyObject *v)
{
    pp_http_response r;
    pp_buf hdrs = PP_BUF_INIT;
    const char *ct = NULL;
    PyObject *keep = NULL, *ct_obj = NULL, *body = NULL;    /* owned */
    int has_type = 0, status = 200, rc = -1, is_file;

    pp_http_response_init(&r, 200);
    is_file = PyObject_TypeCheck(v, (PyTypeObject *)s->file_type);
    if (is_file || PyObject_TypeCheck(v, (PyTypeObject *)s->response_type)) {
        const Py_ssize_t *off = is_file ? s->file_off : s->resp_off;
        PyObject *st = field(s, v, off, F_STATUS), *h;
        long n;
        if (st == NULL)
            goto done;
        n = PyLong_AsLong(st);       /* PyLong_AsInt is 3.13+ */
        Py_DECREF(st);
        if (n == -1 && PyErr_Occurred())
            goto done;
        if (n < 200 || n > 999) {
            PyErr_Format(PyExc_ValueError, "a response status must be 200-999, not %ld", n);
            goto done;
        }
        status = (int)n;
        if ((h = field(s, v, off, F_HEADERS)) == NULL)
            goto done;
        rc = ppy_http_header_lines(h, &hdrs, &has_type);
        Py_DECREF(h);
        if (rc < 0)
            goto done;
        rc = -1;
        if ((ct_obj = field(s, v, off, F_CONTENT_TYPE)) == NULL)
            goto done;
        if (is_file) {
            PyObject *path = field(s, v, off, F_PATH);
            PyObject *fo = path ? field(s, v, off, F_OFFSET) : NULL;
            PyObject *fl = fo ? field(s, v, off, F_LENGTH) : NULL;
            rc = fl ? open_file(path, fo, fl, &r) : -1;
            Py_XDECREF(path);
            Py_XDECREF(fo);
            Py_XDECREF(fl);
            if (rc < 0)
                goto done;
            rc = -1;
            body = NULL;
        } else if ((body = field(s, v, off, F_BODY)) == NULL) {
            goto done;
        }
    } else {
        body = Py_NewRef(v);
    }
    r.status = status;
    if (body && plain_body(s, body, &r, &ct, &keep) < 0)
        goto done;
    if (body == Py_None && status == 200)
        r.status = 204;
    if (ct_obj && ct_obj != Py_None) {
        Py_ssize_t n;
        const char *t = PyUnicode_Check(ct_obj) ? PyUnicode_AsUTF8AndSize(ct_obj, &n) : NULL;
        if (t == NULL || strpbrk(t, "\r\n") || (Py_ssize_t)strlen(t) != n) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "content_type must be a str without CR, LF or NUL");
            goto done;
        }
        r.content_type = t;
        r.content_type_len = (size_t)n;
    } else if (!has_type && ct && r.status != 204 && r.status != 304) {
        r.content_type = ct;
        r.content_type_len = strlen(ct);
    }
    r.headers = (const char *)hdrs.data;
    r.headers_len = hdrs.len;
    r.status = r.status;
    (void)pp_http_respond(req, &r);
    r.file_fd = -1;
    r.flags &= ~PP_HTTP_BODY_REF;    /* the engine owns them now */
    rc = 0;
done:
    if (r.file_fd >= 0)
        close(r.file_fd);
    if ((r.flags & PP_HTTP_BODY_REF) && r.release)
        r.release(r.ctx);
    Py_XDECREF(body);
    Py_XDECREF(keep);
    Py_XDECREF(ct_obj);
    pp_buf_free(&hdrs);
    return rc;
}

/* ---- exact routes by raw path ---------------------------------------------------- */

static int
route_cmp(const void *a, const void *b)
{
    const ppy_http_route *x = a, *y = b;

    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return memcmp(x->path, y->path, x->len);
}

/* The exact routes by their raw bytes, for paths that need no decoding
 * (no '%'): found with one bsearch, no str made, nothing hashed.  Keys
 * that are not ASCII stay with the dict. */
static int
routes_init(ppy_http_site *s)
{
    Py_ssize_t pos = 0, n = 0;
    PyObject *k, *v;

    if ((s->routes = calloc((size_t)PyDict_GET_SIZE(s->exact) + 1, sizeof(*s->routes))) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    while (PyDict_Next(s->exact, &pos, &k, &v)) {
        Py_ssize_t len;
        const char *p;
        if (!PyUnicode_Check(k) || !PyUnicode_IS_ASCII(k))
            continue;
        p = PyUnicode_AsUTF8AndSize(k, &len);
        if (p == NULL)
            return -1;
        if (memchr(p, '%', (size_t)len))
            continue;
        s->routes[n++] = (ppy_http_route){p, (size_t)len, v};
    }
    s->nroutes = (size_t)n;
    qsort(s->routes, s->nroutes, sizeof(*s->routes), route_cmp);
    return 0;
}

static PyObject *
route_of(ppy_http_site *s, const pp_http_request *req)
{
    ppy_http_route key = {req->path, req->path_len, NULL}, *found;

    if (s->nroutes == 0 || memchr(req->path, '%', req->path_len))
        return NULL;
    found = bsearch(&key, s->routes, s->nroutes, sizeof(*s->routes), route_cmp);
    return found ? found->handler : NULL;
}

/* ---- dispatch ----------------------------------------------------------------- */

static PyObject *
call_handler(PyObject *handler, PyObject *kwargs, PyObject *request)
{
    PyObject *args, *res;

    if (kwargs && PyDict_Check(kwargs) && PyDict_GET_SIZE(kwargs) > 0) {
        args = PyTuple_Pack(1, request);
        res = args ? PyObject_Call(handler, args, kwargs) : NULL;
        Py_XDECREF(args);
        return res;
    }
    return PyObject_CallOneArg(handler, request);
}

/* --threads: the handler runs on a handler thread, the answer is made on
 * the loop thread. */
static void
native_run(ppy_http_job *j)
{
    j->result = call_handler(j->args[0], j->args[1], j->args[2]);
}

static void
native_finish(ppy_http_job *j, int cancelled)
{
    if (cancelled) {
        ppy_http_answer_text(j->req, 503, "503 Service Unavailable\n");
        return;
    }
    if (j->result == NULL) {
        PyErr_SetRaisedException(j->exc);
        j->exc = NULL;
    } else if (answer_value(j->site, j->req, j->result) == 0) {
        return;
    }
    ppy_http_handler_failed(j->site, j->req, "an HTTP handler");
}

static void
native_call(ppy_http_site *s, pp_http_request *req)
{
    PyObject *path = NULL, *handler = route_of(s, req), *kwargs = NULL;
    PyObject *request = NULL, *res = NULL;

    if (handler) {
        Py_INCREF(handler);      /* the path is made only if asked for */
    } else if ((path = ppy_http_decode_path(req->path, req->path_len, 0)) == NULL) {
        goto failed;
    } else if ((handler = PyDict_GetItemWithError(s->exact, path)) != NULL) {
        Py_INCREF(handler);
    } else if (PyErr_Occurred()) {
        goto failed;
    } else {
        PyObject *m = PyObject_CallOneArg(s->match, path);
        if (m == NULL)
            goto failed;
        if (m == Py_None) {
            Py_DECREF(m);
            Py_DECREF(path);
            ppy_http_answer_text(req, 404, "404 Not Found\n");
            return;
        }
        if (!PyTuple_Check(m) || PyTuple_GET_SIZE(m) != 2) {
            Py_DECREF(m);
            PyErr_SetString(PyExc_TypeError, "App._match() must return (handler, kwargs) or None");
            goto failed;
        }
        handler = Py_NewRef(PyTuple_GET_ITEM(m, 0));
        kwargs = Py_NewRef(PyTuple_GET_ITEM(m, 1));
        Py_DECREF(m);
        if (handler == Py_None) {
            /* The path is known, the method is not: the matcher's answer. */
            Py_DECREF(handler);
            Py_DECREF(path);
            Py_XDECREF(kwargs);
            ppy_http_answer_text(req, 405, "405 Method Not Allowed\n");
            return;
        }
    }
    if ((request = request_new(s, req, path)) == NULL) {
        Py_DECREF(handler);
        Py_XDECREF(kwargs);
        goto failed;
    }
    if (s->threads) {
        ppy_http_job *j = ppy_http_job_new(s, req, native_run, native_finish);
        if (j == NULL) {
            Py_DECREF(handler);
            Py_XDECREF(kwargs);
            goto failed;
        }
        j->args[0] = handler;    /* the job's references now */
        j->args[1] = kwargs;
        j->args[2] = request;
        Py_XDECREF(path);
        (void)ppy_http_threads_submit(s, j);
        return;
    }
    res = call_handler(handler, kwargs, request);
    Py_DECREF(handler);
    Py_XDECREF(kwargs);
    if (res == NULL || answer_value(s, req, res) < 0)
        goto failed;
    Py_DECREF(res);
    Py_DECREF(request);
    Py_XDECREF(path);
    return;
failed:
    Py_XDECREF(res);
    Py_XDECREF(request);
    Py_XDECREF(path);
    ppy_http_handler_failed(s, req, "an HTTP handler");
}

static void
site_request(pp_http_conn *hc, pp_http_request *req)
{
    ppy_http_site *s = pp_http_conn_group(hc)->data;

    if (s->interface == PPY_HTTP_WSGI)
        ppy_wsgi_call(s, hc, req);
    else
        native_call(s, req);
    if (PyErr_Occurred())            /* never leak one into the loop */
        ppy_lthread_log_error(s->lt, "an HTTP request", NULL);
}

static void
site_close(pp_http_conn *hc, int err)
{
    ppy_http_site *s = pp_http_conn_group(hc)->data;

    (void)err;
    if (s->interface == PPY_HTTP_WSGI)
        ppy_wsgi_conn_closed(s, hc);
    if (s->ep->on_conn_closed)
        s->ep->on_conn_closed(s->ep);
}

static void
site_writable(pp_http_conn *hc)
{
    ppy_http_site *s = pp_http_conn_group(hc)->data;

    if (s->interface == PPY_HTTP_WSGI)
        ppy_wsgi_writable(s, hc);
    if (PyErr_Occurred())
        ppy_lthread_log_error(s->lt, "a streamed WSGI answer", NULL);
}

const pp_http_handler ppy_http_handler = {
    .on_request = site_request,
    .on_close = site_close,
    .on_writable = site_writable,
};

/* ---- the site ------------------------------------------------------------------ */

static const char *const field_names[F_COUNT] = {"status", "headers", "content_type",
                                                 "body", "path", "offset", "length"};

/* The slot offsets of a __slots__ class's fields (-1 for one it lacks). */
static void
slot_offsets(PyObject *type, Py_ssize_t *off)
{
    int i;

    for (i = 0; i < F_COUNT; i++) {
        PyObject *d = PyDict_GetItemString(((PyTypeObject *)type)->tp_dict, field_names[i]);
        off[i] = -1;
        if (d && Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
            if (m->type == Py_T_OBJECT_EX)
                off[i] = m->offset;
        }
    }
}

static int
fields_init(ppy_http_site *s)
{
    int i;

    for (i = 0; i < F_COUNT; i++)
        if ((s->names[i] = PyUnicode_InternFromString(field_names[i])) == NULL)
            return -1;
    if (!PyType_Check(s->response_type) || !PyType_Check(s->file_type)) {
        PyErr_SetString(PyExc_SystemError, "Response and FileResponse must be classes");
        return -1;
    }
    slot_offsets(s->response_type, s->resp_off);
    slot_offsets(s->file_type, s->file_off);
    return 0;
}

int
ppy_http_site_init(ppy_http_site *s, ppy_lthread *lt, const char *spec,
                   int interface, PyObject *shared, int debug, int port)
{
    PyObject *mod = NULL, *site = NULL;
    int rc = -1;

    s->lt = lt;
    s->interface = interface;
    s->debug = debug;
    s->shared = Py_NewRef(shared ? shared : Py_None);
    snprintf(s->server_port, sizeof s->server_port, "%d", port);
    if ((mod = PyImport_ImportModule("pyparallel._http")) == NULL)
        goto done;
    /* (app, exact, match, encode_json, Response, FileResponse) */
    site = PyObject_CallMethod(mod, "_worker_site", "ssO", spec,
                               interface == PPY_HTTP_WSGI ? "wsgi" : "native",
                               s->shared);
    if (site == NULL)
        goto done;
    if (!PyTuple_Check(site) || PyTuple_GET_SIZE(site) != 6) {
        PyErr_SetString(PyExc_SystemError, "_worker_site() must return a 6-tuple");
        goto done;
    }
    s->app = Py_NewRef(PyTuple_GET_ITEM(site, 0));
    s->exact = Py_NewRef(PyTuple_GET_ITEM(site, 1));
    s->match = Py_NewRef(PyTuple_GET_ITEM(site, 2));
    s->encode_json = Py_NewRef(PyTuple_GET_ITEM(site, 3));
    if ((s->zero = PyLong_FromLong(0)) == NULL)
        goto done;
    s->response_type = Py_NewRef(PyTuple_GET_ITEM(site, 4));
    s->file_type = Py_NewRef(PyTuple_GET_ITEM(site, 5));
    if (interface == PPY_HTTP_NATIVE && !PyDict_Check(s->exact)) {
        PyErr_SetString(PyExc_SystemError, "an app's exact routes must be a dict");
        goto done;
    }
    if ((s->request_type = PyType_FromSpec(&request_spec)) == NULL ||
        fields_init(s) < 0 || (interface == PPY_HTTP_NATIVE && routes_init(s) < 0))
        goto done;
    if (interface == PPY_HTTP_WSGI && ppy_wsgi_site_init(s) < 0)
        goto done;
    rc = 0;
done:
    Py_XDECREF(site);
    Py_XDECREF(mod);
    return rc;
}

void
ppy_http_site_clear(ppy_http_site *s)
{
    int i;

    ppy_http_threads_stop(s);
    free(s->routes);             /* points into exact's keys */
    s->routes = NULL;
    s->nroutes = 0;
    for (i = 0; i < F_COUNT; i++)
        Py_CLEAR(s->names[i]);
    ppy_wsgi_site_clear(s);
    Py_CLEAR(s->app);
    Py_CLEAR(s->exact);
    Py_CLEAR(s->match);
    Py_CLEAR(s->encode_json);
    Py_CLEAR(s->zero);
    Py_CLEAR(s->response_type);
    Py_CLEAR(s->file_type);
    Py_CLEAR(s->request_type);
    Py_CLEAR(s->input_type);
    Py_CLEAR(s->start_response_type);
    Py_CLEAR(s->file_wrapper);
    Py_CLEAR(s->errors);
    Py_CLEAR(s->environ_base);
    Py_CLEAR(s->shared);
}
