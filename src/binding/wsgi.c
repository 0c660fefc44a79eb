/* wsgi.c -- PEP 3333 on the loop thread: the environ, wsgi.input,
 * start_response (with exc_info) and write(), and the app's iterable sent
 * as one answer with a Content-Length when it is a list or tuple, as a
 * file with sendfile(2) for wsgi.file_wrapper, and streamed otherwise --
 * with the app's own Content-Length when it gave one, chunked when not.
 *
 * wsgi.input reads the body the engine collected: from memory, or from the
 * temporary file a big body was spilled to, so an upload is never held in
 * memory whole.
 */
#include "ppy_http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- wsgi.input ---------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    pp_http_request *req;
    uint64_t pos;
} ppy_input;

static void
input_dealloc(ppy_input *in)
{
    PyTypeObject *tp = Py_TYPE(in);

    if (in->req)
        pp_http_release(in->req);
    tp->tp_free(in);
    Py_DECREF(tp);
}

/* Copies up to n bytes from the body at in->pos into a new bytes object,
 * stopping after a newline when line is set. */
static PyObject *
input_take(ppy_input *in, Py_ssize_t size, int line)
{
    pp_http_request *q = in->req;
    uint64_t left = q->body_len - in->pos, n = size < 0 || (uint64_t)size > left
                                              ? left : (uint64_t)size;
    PyObject *b;

    if (q->body_fd < 0) {
        const char *p = q->body + in->pos;
        if (line) {
            const char *nl = memchr(p, '\n', (size_t)n);
            if (nl)
                n = (uint64_t)(nl - p) + 1;
        }
        in->pos += n;
        return PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
    }
    if ((b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n)) == NULL)
        return NULL;
    {
        uint64_t got = 0;
        while (got < n) {
            ssize_t r = pread(q->body_fd, PyBytes_AS_STRING(b) + got, (size_t)(n - got),
                              (off_t)(in->pos + got));
            if (r <= 0) {
                Py_DECREF(b);
                return PyErr_Format(PyExc_OSError, "could not read the request body back");
            }
            if (line) {
                char *nl = memchr(PyBytes_AS_STRING(b) + got, '\n', (size_t)r);
                if (nl) {
                    got = (uint64_t)(nl - PyBytes_AS_STRING(b)) + 1;
                    break;
                }
            }
            got += (uint64_t)r;
        }
        in->pos += got;
        if (got < n && _PyBytes_Resize(&b, (Py_ssize_t)got) < 0)
            return NULL;
    }
    return b;
}

static int
size_arg(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t *size)
{
    *size = -1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "expected at most one argument");
        return -1;
    }
    if (nargs == 1 && args[0] != Py_None) {
        *size = PyLong_AsSsize_t(args[0]);
        if (*size == -1 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

static PyObject *
input_read(ppy_input *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t size;

    return size_arg(args, nargs, &size) < 0 ? NULL : input_take(in, size, 0);
}

static PyObject *
input_readline(ppy_input *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t size;

    return size_arg(args, nargs, &size) < 0 ? NULL : input_take(in, size, 1);
}

static PyObject *
input_readlines(ppy_input *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t hint, total = 0;
    PyObject *list;

    if (size_arg(args, nargs, &hint) < 0 || (list = PyList_New(0)) == NULL)
        return NULL;
    while (in->pos < in->req->body_len && (hint <= 0 || total < hint)) {
        PyObject *l = input_take(in, -1, 1);
        if (l == NULL || PyList_Append(list, l) < 0) {
            Py_XDECREF(l);
            Py_DECREF(list);
            return NULL;
        }
        total += PyBytes_GET_SIZE(l);
        Py_DECREF(l);
    }
    return list;
}

static PyObject *
input_next(ppy_input *in)
{
    if (in->pos >= in->req->body_len)
        return NULL;
    return input_take(in, -1, 1);
}

static PyMethodDef input_methods[] = {
    {"read", (PyCFunction)(void (*)(void))input_read, METH_FASTCALL, "read(size=-1) -> bytes"},
    {"readline", (PyCFunction)(void (*)(void))input_readline, METH_FASTCALL, "readline(size=-1) -> bytes"},
    {"readlines", (PyCFunction)(void (*)(void))input_readlines, METH_FASTCALL, "readlines(hint=-1) -> list"},
    {NULL, NULL, 0, NULL}
};

static PyType_Slot input_slots[] = {
    {Py_tp_dealloc, input_dealloc},
    {Py_tp_methods, input_methods},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, input_next},
    {Py_tp_doc, "wsgi.input: the request body."},
    {0, NULL}
};

static PyType_Spec input_spec = {
    .name = "pyparallel.http.WSGIInput",
    .basicsize = sizeof(ppy_input),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = input_slots,
};

/* ---- start_response and write() -------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    pp_http_request *req;
    int status;
    int called;                  /* start_response was called */
    int sent;                    /* the head has gone out (streaming) */
    int64_t length;              /* the app's Content-Length, or -1 */
    int has_type;
    pp_buf headers;              /* header lines */
    ppy_http_site *site;
    PyObject *buffer;            /* --threads: the body so far (a list),
                                    sent by the loop thread at the end */
} ppy_start;

static void
start_dealloc(ppy_start *sr)
{
    PyTypeObject *tp = Py_TYPE(sr);

    if (sr->req)
        pp_http_release(sr->req);
    Py_XDECREF(sr->buffer);
    pp_buf_free(&sr->headers);
    tp->tp_free(sr);
    Py_DECREF(tp);
}

/* start_response(status, headers, exc_info=None) */
static PyObject *
start_call(ppy_start *sr, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"status", "response_headers", "exc_info", NULL};
    PyObject *status, *headers, *exc_info = Py_None, *it, *pair;
    const char *st;
    Py_ssize_t n;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "UO|O:start_response", kwlist,
                                     &status, &headers, &exc_info))
        return NULL;
    if (exc_info != Py_None) {
        if (sr->sent) {
            /* Too late to change the answer: PEP 3333 says re-raise. */
            PyObject *e = PyTuple_Check(exc_info) && PyTuple_GET_SIZE(exc_info) == 3
                          ? PyTuple_GET_ITEM(exc_info, 1) : NULL;
            if (e && PyExceptionInstance_Check(e)) {
                PyErr_SetObject((PyObject *)Py_TYPE(e), e);
                return NULL;
            }
            PyErr_SetString(PyExc_TypeError, "exc_info must be sys.exc_info()");
            return NULL;
        }
    } else if (sr->called) {
        PyErr_SetString(PyExc_RuntimeError, "start_response() was already called "
                        "(call it again only with exc_info)");
        return NULL;
    }
    if ((st = PyUnicode_AsUTF8AndSize(status, &n)) == NULL)
        return NULL;
    if (n < 3 || st[0] < '1' || st[0] > '9' || st[1] < '0' || st[1] > '9' ||
        st[2] < '0' || st[2] > '9' || (n > 3 && st[3] != ' ') || strpbrk(st, "\r\n")) {
        PyErr_Format(PyExc_ValueError, "invalid WSGI status %R: it must look "
                     "like '200 OK'", status);
        return NULL;
    }
    if (!PyList_Check(headers)) {
        PyErr_SetString(PyExc_TypeError, "response_headers must be a list of "
                        "(name, value) tuples");
        return NULL;
    }
    sr->headers.len = 0;
    sr->has_type = 0;
    sr->length = -1;
    if (ppy_http_header_lines(headers, &sr->headers, &sr->has_type) < 0)
        return NULL;
    if ((it = PyObject_GetIter(headers)) == NULL)
        return NULL;
    while ((pair = PyIter_Next(it)) != NULL) {
        PyObject *k = PyTuple_GET_ITEM(pair, 0), *v = PyTuple_GET_ITEM(pair, 1);
        const char *ks = PyUnicode_AsUTF8(k);
        if (ks && strcasecmp(ks, "content-length") == 0) {
            PyObject *num = PyLong_FromUnicodeObject(v, 10);
            if (num == NULL) {
                Py_DECREF(pair);
                Py_DECREF(it);
                return NULL;
            }
            sr->length = PyLong_AsLongLong(num);
            Py_DECREF(num);
            if (sr->length < 0) {
                Py_DECREF(pair);
                Py_DECREF(it);
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "a negative Content-Length");
                return NULL;
            }
        }
        Py_DECREF(pair);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    sr->status = (st[0] - '0') * 100 + (st[1] - '0') * 10 + (st[2] - '0');
    sr->called = 1;
    return PyObject_GetAttrString((PyObject *)sr, "write");
}

static void
response_init(ppy_start *sr, pp_http_response *r)
{
    pp_http_response_init(r, sr->status);
    r->headers = (const char *)sr->headers.data;
    r->headers_len = sr->headers.len;
}

/* Sends the head of a streamed answer, once. */
static int
start_stream(ppy_start *sr)
{
    pp_http_response r;

    if (sr->sent)
        return 0;
    if (!sr->called) {
        PyErr_SetString(PyExc_RuntimeError, "the WSGI app sent body bytes "
                        "before calling start_response()");
        return -1;
    }
    response_init(sr, &r);
    r.flags = PP_HTTP_STREAM;
    r.content_length = sr->length;
    sr->sent = 1;
    (void)pp_http_respond(sr->req, &r);
    return 0;
}

/* Sends (or, on a handler thread, keeps) one body chunk.  Returns 0, 1
 * when the connection's output is above its high-water mark (stop until
 * it drains), 2 when the connection is gone, or -1 with an exception. */
static int
send_chunk(ppy_start *sr, PyObject *data)
{
    Py_buffer b;
    int rc;

    if (!PyBytes_Check(data) && !PyByteArray_Check(data)) {
        PyErr_Format(PyExc_TypeError, "a WSGI app must give bytes, not %.100s",
                     Py_TYPE(data)->tp_name);
        return -1;
    }
    if (sr->buffer) {            /* a handler thread: kept for the loop */
        if (!sr->called) {
            PyErr_SetString(PyExc_RuntimeError, "the WSGI app sent body bytes "
                            "before calling start_response()");
            return -1;
        }
        return PyList_Append(sr->buffer, data);
    }
    if (start_stream(sr) < 0 || PyObject_GetBuffer(data, &b, PyBUF_SIMPLE) < 0)
        return -1;
    rc = pp_http_send(sr->req, b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return rc == 1 ? 1 : rc < 0 ? 2 : 0;
}

static PyObject *
start_write(ppy_start *sr, PyObject *data)
{
    if (send_chunk(sr, data) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef start_methods[] = {
    {"write", (PyCFunction)start_write, METH_O, "write(data): the legacy write() callable"},
    {NULL, NULL, 0, NULL}
};

static PyType_Slot start_slots[] = {
    {Py_tp_dealloc, start_dealloc},
    {Py_tp_call, start_call},
    {Py_tp_methods, start_methods},
    {Py_tp_doc, "start_response(status, response_headers, exc_info=None)"},
    {0, NULL}
};

static PyType_Spec start_spec = {
    .name = "pyparallel.http.StartResponse",
    .basicsize = sizeof(ppy_start),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = start_slots,
};

static int
set_cstr(PyObject *d, const char *key, const char *value)
{
    PyObject *v = PyUnicode_FromString(value);
    int rc = v ? PyDict_SetItemString(d, key, v) : -1;

    Py_XDECREF(v);
    return rc;
}

/* ---- the site ---------------------------------------------------------------------- */

static int keys_init(ppy_http_site *s);

int
ppy_wsgi_site_init(ppy_http_site *s)
{
    PyObject *mod, *version = NULL;
    int rc = -1;

    if ((s->input_type = PyType_FromSpec(&input_spec)) == NULL ||
        (s->start_response_type = PyType_FromSpec(&start_spec)) == NULL ||
        keys_init(s) < 0)
        return -1;
    if ((mod = PyImport_ImportModule("pyparallel._http")) == NULL)
        return -1;
    s->file_wrapper = PyObject_GetAttrString(mod, "FileWrapper");
    Py_DECREF(mod);
    if (s->file_wrapper == NULL)
        return -1;
    if ((s->errors = PySys_GetObject("stderr")) == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no sys.stderr for wsgi.errors");
        return -1;
    }
    Py_INCREF(s->errors);
    if ((s->environ_base = PyDict_New()) == NULL ||
        (version = Py_BuildValue("(ii)", 1, 0)) == NULL)
        goto done;
    if (PyDict_SetItemString(s->environ_base, "wsgi.version", version) < 0 ||
        set_cstr(s->environ_base, "wsgi.url_scheme", "http") < 0 ||
        PyDict_SetItemString(s->environ_base, "wsgi.errors", s->errors) < 0 ||
        PyDict_SetItemString(s->environ_base, "wsgi.multithread", Py_False) < 0 ||
        PyDict_SetItemString(s->environ_base, "wsgi.multiprocess", Py_False) < 0 ||
        PyDict_SetItemString(s->environ_base, "wsgi.run_once", Py_False) < 0 ||
        PyDict_SetItemString(s->environ_base, "wsgi.input_terminated", Py_True) < 0 ||
        PyDict_SetItemString(s->environ_base, "wsgi.file_wrapper", s->file_wrapper) < 0 ||
        set_cstr(s->environ_base, "SCRIPT_NAME", "") < 0 ||
        set_cstr(s->environ_base, "SERVER_NAME", "localhost") < 0 ||
        set_cstr(s->environ_base, "SERVER_PORT", s->server_port) < 0 ||
        PyDict_SetItemString(s->environ_base, "pyparallel.shared", s->shared) < 0)
        goto done;
    rc = 0;
done:
    Py_XDECREF(version);
    return rc;
}

/* ---- one request --------------------------------------------------------------------- */

static int
set_str(PyObject *env, PyObject *key, const char *p, size_t n)
{
    PyObject *v = PyUnicode_DecodeLatin1(p, (Py_ssize_t)n, NULL);
    int rc = v ? PyDict_SetItem(env, key, v) : -1;

    Py_XDECREF(v);
    return rc;
}

/* The request headers most requests carry, with their environ keys made
 * once per site (s->hkeys, in this order). */
static const char *const common_headers[PPY_WSGI_HEADER_KEYS] = {
    "host", "user-agent", "accept", "accept-encoding", "accept-language",
    "connection", "cookie", "referer", "cache-control", "origin",
    "authorization", "upgrade-insecure-requests", "x-forwarded-for",
    "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "x-request-id",
    "if-none-match", "if-modified-since", "pragma", "dnt", "sec-fetch-mode",
    "sec-fetch-site", "sec-fetch-dest",
};

static void
header_key(const char *name, size_t n, char *key)
{
    size_t j;

    memcpy(key, "HTTP_", 5);
    for (j = 0; j < n; j++) {
        char c = name[j];
        key[5 + j] = c == '-' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
    }
    key[5 + j] = '\0';
}

static int
keys_init(ppy_http_site *s)
{
    static const char *const names[W_COUNT] = {
        "REQUEST_METHOD", "QUERY_STRING", "RAW_URI", "SERVER_PROTOCOL", "PATH_INFO",
        "CONTENT_LENGTH", "CONTENT_TYPE", "REMOTE_ADDR", "REMOTE_PORT", "wsgi.input",
        "HTTP/1.0", "HTTP/1.1", "GET", "POST", "HEAD", ""};
    char key[64];
    int i;

    for (i = 0; i < W_COUNT; i++)
        if ((s->wkeys[i] = PyUnicode_InternFromString(names[i])) == NULL)
            return -1;
    for (i = 0; i < PPY_WSGI_HEADER_KEYS; i++) {
        header_key(common_headers[i], strlen(common_headers[i]), key);
        if ((s->hkeys[i] = PyUnicode_InternFromString(key)) == NULL)
            return -1;
    }
    return 0;
}

void
ppy_wsgi_site_clear(ppy_http_site *s)
{
    int i;

    for (i = 0; i < W_COUNT; i++)
        Py_CLEAR(s->wkeys[i]);
    for (i = 0; i < PPY_WSGI_HEADER_KEYS; i++)
        Py_CLEAR(s->hkeys[i]);
}

/* The environ key for a header: one made once, or a new str. */
static PyObject *
key_for(ppy_http_site *s, const pp_http_header *h)
{
    char key[300];
    int i;

    for (i = 0; i < PPY_WSGI_HEADER_KEYS; i++) {
        const char *c = common_headers[i];
        if (strlen(c) == h->name_len && strncasecmp(h->name, c, h->name_len) == 0)
            return Py_NewRef(s->hkeys[i]);
    }
    header_key(h->name, h->name_len, key);
    return PyUnicode_FromString(key);
}

static int
add_headers(ppy_http_site *s, PyObject *env, pp_http_request *req)
{
    size_t i;

    for (i = 0; i < req->nheaders; i++) {
        const pp_http_header *h = &req->headers[i];
        PyObject *v, *old, *key;
        if (h->name_len + 6 >= 300 || memchr(h->name, '_', h->name_len))
            continue;
        if (h->name_len == 12 && strncasecmp(h->name, "content-type", 12) == 0) {
            if (set_str(env, s->wkeys[W_CONTENT_TYPE], h->value, h->value_len) < 0)
                return -1;
            continue;
        }
        if (h->name_len == 14 && strncasecmp(h->name, "content-length", 14) == 0)
            continue;            /* set from the body the engine read */
        if ((key = key_for(s, h)) == NULL)
            return -1;
        if ((v = PyUnicode_DecodeLatin1(h->value, h->value_len, NULL)) == NULL) {
            Py_DECREF(key);
            return -1;
        }
        old = PyDict_GetItemWithError(env, key);
        if (old && PyUnicode_Check(old))
            Py_SETREF(v, PyUnicode_FromFormat("%U,%U", old, v));
        if (v == NULL || PyErr_Occurred() || PyDict_SetItem(env, key, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(key);
            return -1;
        }
        Py_DECREF(v);
        Py_DECREF(key);
    }
    return 0;
}

/* A constant for the common methods, else a new str. */
static PyObject *
method_str(ppy_http_site *s, const pp_http_request *req)
{
    static const int which[] = {W_GET, W_POST, W_HEAD};
    static const char *const names[] = {"GET", "POST", "HEAD"};
    size_t i;

    for (i = 0; i < 3; i++)
        if (req->method_len == strlen(names[i]) && memcmp(req->method, names[i], req->method_len) == 0)
            return Py_NewRef(s->wkeys[which[i]]);
    return PyUnicode_DecodeLatin1(req->method, (Py_ssize_t)req->method_len, NULL);
}

static PyObject *
make_environ(ppy_http_site *s, pp_http_request *req)
{
    PyObject *env = PyDict_Copy(s->environ_base), *v, **k = s->wkeys;
    ppy_input *in;
    char num[32];
    int port = 0, rc;
    const char *host;

    if (env == NULL)
        return NULL;
    if ((v = method_str(s, req)) == NULL)
        goto fail;
    rc = PyDict_SetItem(env, k[W_REQUEST_METHOD], v);
    Py_DECREF(v);
    if (rc < 0 ||
        (req->query_len ? set_str(env, k[W_QUERY_STRING], req->query, req->query_len)
                        : PyDict_SetItem(env, k[W_QUERY_STRING], k[W_EMPTY])) < 0 ||
        set_str(env, k[W_RAW_URI], req->target, req->target_len) < 0 ||
        PyDict_SetItem(env, k[W_SERVER_PROTOCOL],
                       k[req->version_minor ? W_HTTP11 : W_HTTP10]) < 0)
        goto fail;
    if ((v = ppy_http_decode_path(req->path, req->path_len, 1)) == NULL ||
        PyDict_SetItem(env, k[W_PATH_INFO], v) < 0) {
        Py_XDECREF(v);
        goto fail;
    }
    Py_DECREF(v);
    if (req->body_len || (req->flags & PP_HTTP_CHUNKED) || pp_http_find(req, "content-length", 14)) {
        snprintf(num, sizeof num, "%llu", (unsigned long long)req->body_len);
        if (set_str(env, k[W_CONTENT_LENGTH], num, strlen(num)) < 0)
            goto fail;
    }
    if (req->conn) {
        host = pp_http_conn_peer(req->conn, &port);
        snprintf(num, sizeof num, "%d", port);
        if (set_str(env, k[W_REMOTE_ADDR], host, strlen(host)) < 0 ||
            set_str(env, k[W_REMOTE_PORT], num, strlen(num)) < 0)
            goto fail;
    }
    if (add_headers(s, env, req) < 0)
        goto fail;
    if ((in = PyObject_New(ppy_input, (PyTypeObject *)s->input_type)) == NULL)
        goto fail;
    pp_http_hold(req);
    in->req = req;
    in->pos = 0;
    if (PyDict_SetItem(env, k[W_INPUT], (PyObject *)in) < 0) {
        Py_DECREF(in);
        goto fail;
    }
    Py_DECREF(in);
    return env;
fail:
    Py_DECREF(env);
    return NULL;
}

static int
send_wrapped_file(ppy_start *sr, PyObject *res)
{
    PyObject *filelike = PyObject_GetAttrString(res, "filelike"), *fno;
    pp_http_response r;
    struct stat st;
    off_t pos;
    int fd;

    if (filelike == NULL)
        return -1;
    fno = PyObject_CallMethod(filelike, "fileno", NULL);
    Py_DECREF(filelike);
    if (fno == NULL) {
        PyErr_Clear();
        return 0;
    }
    fd = PyObject_AsFileDescriptor(fno);    /* an int in 0..INT_MAX, else -1 */
    Py_DECREF(fno);
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        (pos = lseek(fd, 0, SEEK_CUR)) < 0) {
        PyErr_Clear();
        return 0;
    }
    if ((fd = dup(fd)) < 0)
        return 0;
    response_init(sr, &r);
    r.file_fd = fd;
    r.file_offset = pos;
    r.file_count = st.st_size > pos ? (size_t)(st.st_size - pos) : 0;
    if (sr->length >= 0 && (uint64_t)sr->length < r.file_count)
        r.file_count = (size_t)sr->length;
    sr->sent = 1;
    (void)pp_http_respond(sr->req, &r);
    return 1;
}

/* A list or tuple of bytes: one answer with its length. */
static int
send_sequence(ppy_start *sr, PyObject *seq)
{
    Py_ssize_t i, n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    pp_http_response r;
    pp_buf body = PP_BUF_INIT;

    for (i = 0; i < n; i++) {
        if (!PyBytes_Check(items[i])) {
            PyErr_Format(PyExc_TypeError, "a WSGI app must give bytes, not %.100s",
                         Py_TYPE(items[i])->tp_name);
            return -1;
        }
    }
    if (!sr->called) {
        PyErr_SetString(PyExc_RuntimeError, "the WSGI app returned without "
                        "calling start_response()");
        return -1;
    }
    response_init(sr, &r);
    if (n == 1) {
        if (ppy_http_body_of(items[0], &r) < 0)
            return -1;
    } else {
        for (i = 0; i < n; i++) {
            if (pp_buf_put(&body, PyBytes_AS_STRING(items[i]),
                           (size_t)PyBytes_GET_SIZE(items[i])) < 0) {
                pp_buf_free(&body);
                PyErr_NoMemory();
                return -1;
            }
        }
        r.body = body.data;
        r.body_len = body.len;
    }
    sr->sent = 1;
    (void)pp_http_respond(sr->req, &r);
    pp_buf_free(&body);
    return 0;
}

static int
call_close(PyObject *res)
{
    PyObject *close = PyObject_GetAttrString(res, "close"), *r;

    if (close == NULL) {
        PyErr_Clear();
        return 0;
    }
    r = PyObject_CallNoArgs(close);
    Py_DECREF(close);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* ---- streaming at the client's pace ---------------------------------------------- */

static void app_failed(ppy_http_site *s, ppy_start *sr, pp_http_request *req);

/* An iterable whose answer waits for its connection to drain: the
 * connection's list of them (its pp_http_conn data), oldest first. */
typedef struct paused {
    struct paused *next;
    ppy_start *sr;
    PyObject *it, *res;
} paused;

/* Iterates it into sr's streamed answer.  Returns 0 (done: the answer is
 * complete, or its connection gone), 1 (paused: the connection's output
 * is full; it, res and sr are kept and resumed by ppy_wsgi_writable), or
 * -1 with an exception set. */
static int
stream(ppy_start *sr, PyObject *it, PyObject *res)
{
    PyObject *item;
    int rc = 0;

    while ((item = PyIter_Next(it)) != NULL) {
        rc = PyBytes_Check(item) && PyBytes_GET_SIZE(item) == 0 && sr->sent
             ? 0 : send_chunk(sr, item);
        Py_DECREF(item);
        if (rc < 0)
            return -1;
        if (rc == 2)
            return 0;            /* nobody to send it to: stop producing */
        if (rc == 1 && sr->req->conn) {
            pp_http_conn *hc = sr->req->conn;
            paused *p = malloc(sizeof(*p)), *q = pp_http_conn_data(hc);
            if (p == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            p->next = NULL;
            p->sr = (ppy_start *)Py_NewRef((PyObject *)sr);
            p->it = Py_NewRef(it);
            p->res = Py_NewRef(res);
            if (q == NULL) {
                pp_http_conn_set_data(hc, p);
            } else {
                while (q->next)
                    q = q->next;
                q->next = p;
            }
            return 1;
        }
    }
    if (PyErr_Occurred() || start_stream(sr) < 0)
        return -1;
    (void)pp_http_end(sr->req);
    return 0;
}

static void
paused_free(paused *p)
{
    Py_DECREF(p->it);
    Py_DECREF(p->res);
    Py_DECREF((PyObject *)p->sr);
    free(p);
}

void
ppy_wsgi_writable(ppy_http_site *s, pp_http_conn *hc)
{
    paused *p;

    while ((p = pp_http_conn_data(hc)) != NULL) {
        int rc;
        pp_http_conn_set_data(hc, p->next);
        p->next = NULL;
        rc = stream(p->sr, p->it, p->res);
        if (rc == 1) {           /* full again: it queued itself anew */
            paused_free(p);
            break;
        }
        if (call_close(p->res) < 0 && rc == 0)
            rc = -1;
        if (rc < 0)
            app_failed(s, p->sr, p->sr->req);
        paused_free(p);
    }
}

void
ppy_wsgi_conn_closed(ppy_http_site *s, pp_http_conn *hc)
{
    paused *p;

    while ((p = pp_http_conn_data(hc)) != NULL) {
        pp_http_conn_set_data(hc, p->next);
        if (call_close(p->res) < 0)      /* PEP 3333: close() always */
            ppy_lthread_log_error(s->lt, "a WSGI iterable's close()", NULL);
        paused_free(p);
    }
}

/* Answers with what the app returned: a file wrapper by sendfile, a list
 * in one answer, any other iterable streamed at the client's pace.  Loop
 * thread.  Returns 0, 1 (paused: see stream()), or -1 with an exception
 * set. */
static int
answer_result(ppy_start *sr, PyObject *res)
{
    PyObject *it;
    int rc;

    if (!sr->sent && PyObject_TypeCheck(res, (PyTypeObject *)sr->site->file_wrapper)) {
        if ((rc = send_wrapped_file(sr, res)) != 0)
            return rc < 0 ? -1 : 0;
    }
    if (!sr->sent && (PyList_CheckExact(res) || PyTuple_CheckExact(res)))
        return send_sequence(sr, res);
    if ((it = PyObject_GetIter(res)) == NULL)
        return -1;
    rc = stream(sr, it, res);
    Py_DECREF(it);
    return rc;
}

/* The app failed (exception set): a 500, or, when half an answer is out
 * already, the connection cut. */
static void
app_failed(ppy_http_site *s, ppy_start *sr, pp_http_request *req)
{
    if (sr && sr->sent) {
        ppy_lthread_log_error(s->lt, "a WSGI app (after its answer began)", NULL);
        if (req->conn)
            pp_conn_abort(pp_http_conn_pp(req->conn));
        (void)pp_http_end(req);
    } else {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "the WSGI app failed");
        ppy_http_handler_failed(s, req, "a WSGI app");
    }
}

/* --threads: the app runs on a handler thread, and so does the first
 * THREAD_BODY bytes of its iterable (write() and the iterable, in order,
 * kept in sr->buffer).  A body that ends within that is answered whole
 * with a Content-Length; a longer one is sent from there on by the loop
 * thread, which goes on iterating at the client's pace -- so an endless
 * or huge stream never piles up on a thread.
 *   job args: [0] environ, [1] start_response, [2] the iterator when the
 *   body goes on, [3] the app's result (for close()) */
#define THREAD_BODY (1 << 20)

static void
wsgi_run(ppy_http_job *j)
{
    ppy_start *sr = (ppy_start *)j->args[1];
    PyObject *res = PyObject_CallFunctionObjArgs(j->site->app, j->args[0], sr, NULL);
    PyObject *it, *item;
    Py_ssize_t size = 0;

    if (res == NULL)
        return;
    if ((PyObject_TypeCheck(res, (PyTypeObject *)j->site->file_wrapper) ||
         PyList_CheckExact(res) || PyTuple_CheckExact(res)) &&
        PyList_GET_SIZE(sr->buffer) == 0) {
        j->result = res;         /* sendfile or one answer, by the loop thread */
        return;
    }
    if ((it = PyObject_GetIter(res)) == NULL) {
        Py_DECREF(res);
        return;
    }
    while (size <= THREAD_BODY && (item = PyIter_Next(it)) != NULL) {
        int rc = send_chunk(sr, item);
        if (PyBytes_Check(item))
            size += PyBytes_GET_SIZE(item);
        Py_DECREF(item);
        if (rc < 0)
            break;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(it);
        (void)call_close(res);
        Py_DECREF(res);
        return;
    }
    if (size > THREAD_BODY) {    /* it goes on: the loop thread streams it */
        j->args[2] = it;
        j->args[3] = res;
        j->result = Py_NewRef(sr->buffer);
        return;
    }
    Py_DECREF(it);
    if (call_close(res) == 0)
        j->result = Py_NewRef(sr->buffer);
    Py_DECREF(res);
}

static void
wsgi_finish(ppy_http_job *j, int cancelled)
{
    ppy_start *sr = (ppy_start *)j->args[1];
    PyObject *res = j->result;
    Py_ssize_t i;
    int ok;

    if (cancelled) {
        ppy_http_answer_text(j->req, 503, "503 Service Unavailable\n");
        if (j->args[3] && call_close(j->args[3]) < 0)
            PyErr_Clear();
        return;
    }
    Py_CLEAR(sr->buffer);        /* from here on, send */
    if (res == NULL) {
        PyErr_SetRaisedException(j->exc);
        j->exc = NULL;
        app_failed(j->site, sr, j->req);
        return;
    }
    if (j->args[2] == NULL && PyList_CheckExact(res)) {
        if (send_sequence(sr, res) == 0)
            return;
        app_failed(j->site, sr, j->req);
        return;
    }
    if (j->args[2] == NULL) {    /* a file wrapper or a tuple */
        ok = answer_result(sr, res);
        if (ok == 1)
            return;              /* paused: closed when it ends */
        if (call_close(res) < 0)
            ok = -1;
        if (ok < 0)
            app_failed(j->site, sr, j->req);
        return;
    }
    /* What the thread collected, then the rest at the client's pace. */
    ok = 0;
    for (i = 0; i < PyList_GET_SIZE(res) && ok == 0; i++)
        ok = send_chunk(sr, PyList_GET_ITEM(res, i)) < 0 ? -1 : 0;
    if (ok == 0 && (ok = stream(sr, j->args[2], j->args[3])) == 1)
        return;                  /* paused: closed when it ends */
    if (call_close(j->args[3]) < 0)
        ok = -1;
    if (ok < 0)
        app_failed(j->site, sr, j->req);
}

void
ppy_wsgi_call(ppy_http_site *s, pp_http_conn *hc, pp_http_request *req)
{
    PyObject *env = make_environ(s, req), *res = NULL;
    ppy_start *sr = NULL;
    int ok;

    (void)hc;
    if (env == NULL)
        goto failed;
    if ((sr = PyObject_New(ppy_start, (PyTypeObject *)s->start_response_type)) == NULL)
        goto failed;
    pp_http_hold(req);
    sr->req = req;
    sr->site = s;
    sr->status = 500;
    sr->called = sr->sent = sr->has_type = 0;
    sr->length = -1;
    sr->headers = (pp_buf)PP_BUF_INIT;
    sr->buffer = NULL;
    if (s->threads) {
        ppy_http_job *j;
        if ((sr->buffer = PyList_New(0)) == NULL ||
            (j = ppy_http_job_new(s, req, wsgi_run, wsgi_finish)) == NULL)
            goto failed;
        j->args[0] = env;        /* the job's references now */
        j->args[1] = (PyObject *)sr;
        (void)ppy_http_threads_submit(s, j);
        return;
    }
    if ((res = PyObject_CallFunctionObjArgs(s->app, env, sr, NULL)) == NULL)
        goto failed;
    ok = answer_result(sr, res);
    if (ok == 1)
        goto out;                /* paused: closed when it ends */
    if (call_close(res) < 0)
        ok = -1;
    if (ok == 0)
        goto out;
failed:
    app_failed(s, sr, req);
out:
    Py_XDECREF(res);
    Py_XDECREF((PyObject *)sr);
    Py_XDECREF(env);
}
