/* transport.c -- the Transport a protocol's callbacks get: one per
 * connection, living in the worker interpreter that owns the connection.
 *
 * It is a thin handle on the engine's pp_conn: writes queue into the
 * connection's output (copied when small, referenced when big: a bytes
 * object of PPY_WRITE_REF_MIN bytes or more is kept alive until the kernel
 * has it, with no copy), sendfile() queues a file range, and the rest maps
 * one to one onto pp_conn calls.  Once the connection has closed the
 * handle is detached and every method but is_closing() and
 * get_extra_info() raises BrokenPipeError.
 *
 * Threads: the engine's connection belongs to its loop thread, but any
 * thread of the worker's interpreter may hold the transport (a submit()ed
 * task runs next to the loop thread, sharing its GIL; it may start threads
 * of its own).  A method that touches the connection, called on any other
 * thread, is posted to the loop thread as a command -- which wakes it from
 * its poll -- and the caller waits for it with the GIL released: the call
 * then runs exactly as it would in a callback, its output is flushed in
 * that loop iteration, its exception is raised in the caller, and calls
 * keep their order.  Reading the connection's state under the GIL would be
 * consistent (the loop thread changes it only while holding the GIL), but
 * writing it would not: the poll runs without the GIL, and a write queued
 * from another thread would wait for the loop's next wake-up.
 */
#include "ppy_io.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes objects at least this big are sent without copying. */
#define PPY_WRITE_REF_MIN 4096

typedef struct {
    PyObject_HEAD
    ppy_lthread *lt;
    ppy_pconn *pc;                /* NULL once the connection has closed */
    PyObject *shared;
} ppy_transport;

PyObject *
ppy_transport_new(ppy_lthread *lt, ppy_pconn *pc, PyObject *shared)
{
    ppy_transport *t = PyObject_New(ppy_transport, lt->st->transport_type);

    if (t == NULL)
        return NULL;
    t->lt = lt;
    t->pc = pc;
    t->shared = Py_NewRef(shared ? shared : Py_None);
    return (PyObject *)t;
}

void
ppy_transport_detach(PyObject *transport)
{
    ((ppy_transport *)transport)->pc = NULL;
}

static pp_conn *
live_conn(ppy_transport *t)
{
    if (t->pc == NULL || t->pc->c == NULL) {
        PyErr_SetString(PyExc_BrokenPipeError,
                        "the connection is closed (a transport cannot be used "
                        "after connection_lost)");
        return NULL;
    }
    return t->pc->c;
}

/* Maps a pp_conn_write* result: 0/1 are fine, -errno raises. */
static int
write_result(int rc)
{
    if (rc >= 0)
        return 0;
    if (rc == -EPIPE) {
        PyErr_SetString(PyExc_BrokenPipeError,
                        "the connection is closing (close(), write_eof() or an "
                        "error came first): nothing more can be sent");
    } else {
        errno = -rc;
        PyErr_SetFromErrno(PyExc_OSError);
    }
    return -1;
}

static void
release_ref(void *ctx)
{
    Py_DECREF((PyObject *)ctx);
}

/* Queues one bytes-like or str value.  Returns 1 if bytes were queued, 0
 * for an empty value, -1 with an exception set. */
static int
send_one(pp_conn *c, PyObject *v)
{
    Py_buffer view;
    const char *p;
    Py_ssize_t n;
    int rc;

    if (PyBytes_CheckExact(v)) {
        n = PyBytes_GET_SIZE(v);
        if (n == 0)
            return 0;
        if (n >= PPY_WRITE_REF_MIN) {
            rc = pp_conn_write_ref(c, PyBytes_AS_STRING(v), (size_t)n,
                                   release_ref, Py_NewRef(v));
            if (rc < 0)
                Py_DECREF(v);
        } else {
            rc = pp_conn_write(c, PyBytes_AS_STRING(v), (size_t)n);
        }
        return write_result(rc) < 0 ? -1 : 1;
    }
    if (PyUnicode_Check(v)) {
        if ((p = PyUnicode_AsUTF8AndSize(v, &n)) == NULL)
            return -1;
        if (n == 0)
            return 0;
        return write_result(pp_conn_write(c, p, (size_t)n)) < 0 ? -1 : 1;
    }
    if (PyObject_CheckBuffer(v) && !PyList_Check(v) && !PyTuple_Check(v)) {
        if (PyObject_GetBuffer(v, &view, PyBUF_SIMPLE) < 0)
            return -1;
        rc = view.len ? pp_conn_write(c, view.buf, (size_t)view.len) : 0;
        n = view.len;
        PyBuffer_Release(&view);
        if (write_result(rc) < 0)
            return -1;
        return n > 0;
    }
    PyErr_Format(PyExc_TypeError,
                 "cannot send %.100s: send bytes, str (sent as UTF-8), "
                 "bytearray, memoryview, or a list or tuple of them",
                 Py_TYPE(v)->tp_name);
    return -1;
}

int
ppy_transport_send_value(PyObject *transport, PyObject *value)
{
    ppy_transport *t = (ppy_transport *)transport;
    pp_conn *c;
    Py_ssize_t i;
    int any = 0, rc;

    if (value == Py_None)
        return 0;
    if ((c = live_conn(t)) == NULL)
        return -1;
    if (PyList_Check(value) || PyTuple_Check(value)) {
        PyObject *seq = PySequence_Fast(value, "");
        if (seq == NULL)
            return -1;
        for (i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
            rc = send_one(c, PySequence_Fast_GET_ITEM(seq, i));
            if (rc < 0) {
                Py_DECREF(seq);
                return -1;
            }
            any |= rc;
        }
        Py_DECREF(seq);
        return any;
    }
    return send_one(c, value);
}

/* ---- running on the loop thread ---------------------------------------------- */

/* A method's body: runs on the connection's loop thread.  a and kw are the
 * method's argument (METH_O), or its args tuple and kwargs dict, or NULL. */
typedef PyObject *(*tr_impl)(ppy_transport *t, PyObject *a, PyObject *kw);

typedef struct {
    ppy_cmd base;
    tr_impl impl;
    ppy_transport *t;
    PyObject *a, *kw;
    PyObject *result;            /* what impl returned, or NULL */
    PyObject *exc;               /* ... and then what it raised */
} tr_cmd;

static void
tr_cmd_proc(ppy_lthread *lt, ppy_cmd *cmd)
{
    tr_cmd *tc = (tr_cmd *)cmd;

    (void)lt;
    tc->result = tc->impl(tc->t, tc->a, tc->kw);
    if (tc->result == NULL)
        tc->exc = PyErr_GetRaisedException();   /* for the caller, not the log */
}

/* Both ends release with the worker's GIL held: the caller, and the loop
 * thread in run_cmd(). */
static void
tr_cmd_free(ppy_cmd *cmd)
{
    tr_cmd *tc = (tr_cmd *)cmd;

    Py_XDECREF(tc->result);
    Py_XDECREF(tc->exc);
    Py_XDECREF(tc->a);
    Py_XDECREF(tc->kw);
    Py_XDECREF((PyObject *)tc->t);
    free(tc);
}

/* Calls impl on the connection's loop thread: at once when this is that
 * thread, else through a command, waiting for it with the GIL released.
 * The wait cannot be interrupted: the loop thread runs every command
 * posted before it stopped, so `done` always comes, and leaving early
 * would lose the call's outcome. */
static PyObject *
on_loop(ppy_transport *t, tr_impl impl, PyObject *a, PyObject *kw)
{
    tr_cmd *tc;
    PyObject *result, *exc;

    if (ppy_lthread_current == t->lt)
        return impl(t, a, kw);
    if ((tc = calloc(1, sizeof(*tc))) == NULL)
        return PyErr_NoMemory();
    ppy_cmd_init(&tc->base, tr_cmd_proc);
    tc->base.free = tr_cmd_free;
    tc->impl = impl;
    tc->t = (ppy_transport *)Py_NewRef((PyObject *)t);
    tc->a = Py_XNewRef(a);
    tc->kw = Py_XNewRef(kw);
    if (ppy_cmd_post(t->lt, &tc->base) < 0) {
        ppy_cmd_release(&tc->base);
        PyErr_SetString(PyExc_BrokenPipeError,
                        "the connection is closed: its worker's loop thread "
                        "has stopped (pyparallel is shutting down)");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    while (pp_word_get(&tc->base.done) == 0)
        pp_word_wait(&tc->base.done, 0, 0, -1);
    Py_END_ALLOW_THREADS
    result = tc->result;
    exc = tc->exc;
    tc->result = tc->exc = NULL;
    ppy_cmd_release(&tc->base);
    if (result == NULL) {
        if (exc == NULL)
            exc = PyObject_CallFunction(PyExc_SystemError, "s",
                                        "a transport call failed without an "
                                        "exception");
        if (exc != NULL)
            PyErr_SetRaisedException(exc);
    }
    return result;
}

/* ---- methods ---------------------------------------------------------------- */

static PyObject *
do_write(ppy_transport *t, PyObject *data, PyObject *unused)
{
    pp_conn *c = live_conn(t);

    (void)unused;
    if (c == NULL || send_one(c, data) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
tr_write(ppy_transport *t, PyObject *data)
{
    return on_loop(t, do_write, data, NULL);
}

/* items: a list (made by the caller's thread, which owns the iterable). */
static PyObject *
do_writelines(ppy_transport *t, PyObject *items, PyObject *unused)
{
    pp_conn *c = live_conn(t);
    Py_ssize_t i;

    (void)unused;
    if (c == NULL)
        return NULL;
    for (i = 0; i < PyList_GET_SIZE(items); i++) {
        if (send_one(c, PyList_GET_ITEM(items, i)) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
tr_writelines(ppy_transport *t, PyObject *iterable)
{
    PyObject *items = PySequence_List(iterable), *r;

    if (items == NULL)
        return NULL;
    r = on_loop(t, do_writelines, items, NULL);
    Py_DECREF(items);
    return r;
}

/* Borrows a bytes-like's buffer (view must be released by the caller). */
static int
get_bytes(PyObject *o, Py_buffer *view, const char *name)
{
    if (PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes-like, not str", name);
        return -1;
    }
    return PyObject_GetBuffer(o, view, PyBUF_SIMPLE);
}

static PyObject *
do_sendfile(ppy_transport *t, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"path", "offset", "count", "before", "after", NULL};
    PyObject *path_obj = NULL, *count_obj = Py_None;
    PyObject *before_obj = NULL, *after_obj = NULL;
    long long offset = 0;
    Py_buffer before = {0}, after = {0};
    pp_conn_file f;
    pp_conn *c;
    int fd = -1, rc;
    PyObject *res = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&|LOOO:sendfile", kwlist,
                                     PyUnicode_FSConverter, &path_obj, &offset,
                                     &count_obj, &before_obj, &after_obj))
        return NULL;
    if ((c = live_conn(t)) == NULL)
        goto done;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "offset must be >= 0");
        goto done;
    }
    memset(&f, 0, sizeof f);
    f.count = PP_FILE_TO_END;
    if (count_obj != Py_None) {
        long long n = PyLong_AsLongLong(count_obj);
        if (n == -1 && PyErr_Occurred())
            goto done;
        if (n < 0) {
            PyErr_SetString(PyExc_ValueError, "count must be >= 0 or None");
            goto done;
        }
        f.count = (size_t)n;
    }
    if (before_obj && get_bytes(before_obj, &before, "before") < 0)
        goto done;
    if (after_obj && get_bytes(after_obj, &after, "after") < 0)
        goto done;
    fd = open(PyBytes_AS_STRING(path_obj), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        PyObject *name = PyUnicode_DecodeFSDefault(PyBytes_AS_STRING(path_obj));
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
        Py_XDECREF(name);
        goto done;
    }
    f.fd = fd;
    f.flags = PP_FILE_CLOSE;
    f.offset = (off_t)offset;
    f.before = before.buf;
    f.before_len = before.buf ? (size_t)before.len : 0;
    f.after = after.buf;
    f.after_len = after.buf ? (size_t)after.len : 0;
    rc = pp_conn_sendfile(c, &f);
    if (rc < 0) {
        close(fd);
        if (rc == -EINVAL) {
            PyErr_Format(PyExc_ValueError,
                         "sendfile: offset %lld is past the end of the file",
                         offset);
            goto done;
        }
        (void)write_result(rc);
        goto done;
    }
    res = Py_NewRef(Py_None);
done:
    if (before.buf)
        PyBuffer_Release(&before);
    if (after.buf)
        PyBuffer_Release(&after);
    Py_XDECREF(path_obj);
    return res;
}

static PyObject *
tr_sendfile(ppy_transport *t, PyObject *args, PyObject *kwargs)
{
    return on_loop(t, do_sendfile, args, kwargs);
}

static PyObject *
do_close(ppy_transport *t, PyObject *a, PyObject *kw)
{
    (void)a; (void)kw;
    if (t->pc && t->pc->c)
        pp_conn_close(t->pc->c);
    Py_RETURN_NONE;
}

static PyObject *
do_abort(ppy_transport *t, PyObject *a, PyObject *kw)
{
    (void)a; (void)kw;
    if (t->pc && t->pc->c)
        pp_conn_abort(t->pc->c);
    Py_RETURN_NONE;
}

static PyObject *
do_write_eof(ppy_transport *t, PyObject *a, PyObject *kw)
{
    pp_conn *c = live_conn(t);

    (void)a; (void)kw;
    if (c == NULL || write_result(pp_conn_shutdown(c)) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
do_pause_reading(ppy_transport *t, PyObject *a, PyObject *kw)
{
    pp_conn *c = live_conn(t);

    (void)a; (void)kw;
    if (c == NULL)
        return NULL;
    pp_conn_pause_reading(c);
    Py_RETURN_NONE;
}

static PyObject *
do_resume_reading(ppy_transport *t, PyObject *a, PyObject *kw)
{
    pp_conn *c = live_conn(t);

    (void)a; (void)kw;
    if (c == NULL)
        return NULL;
    pp_conn_resume_reading(c);
    Py_RETURN_NONE;
}

static PyObject *
do_is_closing(ppy_transport *t, PyObject *a, PyObject *kw)
{
    (void)a; (void)kw;
    return PyBool_FromLong(t->pc == NULL || t->pc->c == NULL ||
                           pp_conn_closing(t->pc->c));
}

static PyObject *
do_get_write_buffer_size(ppy_transport *t, PyObject *a, PyObject *kw)
{
    (void)a; (void)kw;
    if (t->pc == NULL || t->pc->c == NULL)
        return PyLong_FromLong(0);
    return PyLong_FromSize_t(pp_conn_queued(t->pc->c));
}

/* The METH_NOARGS methods, each on the loop thread. */
#define NOARGS_METHOD(name)                                                 \
    static PyObject *                                                       \
    tr_##name(ppy_transport *t, PyObject *unused)                           \
    {                                                                       \
        (void)unused;                                                       \
        return on_loop(t, do_##name, NULL, NULL);                           \
    }

NOARGS_METHOD(close)
NOARGS_METHOD(abort)
NOARGS_METHOD(write_eof)
NOARGS_METHOD(pause_reading)
NOARGS_METHOD(resume_reading)
NOARGS_METHOD(is_closing)
NOARGS_METHOD(get_write_buffer_size)

static PyObject *
address(int fd, int peer)
{
    char host[PP_NET_ADDR_LEN];
    int port = -1;
    int fam = pp_net_addr_parts(fd, peer, host, sizeof host, &port);

    if (fam < 0) {
        errno = -fam;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (fam == AF_UNIX)
        return PyUnicode_DecodeFSDefault(host);
    return Py_BuildValue("(si)", host, port);
}

static PyObject *
do_get_extra_info(ppy_transport *t, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"name", "default", NULL};
    const char *name;
    PyObject *dflt = Py_None;
    int fd = -1;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|O:get_extra_info", kwlist,
                                     &name, &dflt))
        return NULL;
    if (t->pc && t->pc->c)
        fd = pp_conn_fd(t->pc->c);
    if (fd < 0)
        return Py_NewRef(dflt);
    if (strcmp(name, "peername") == 0)
        return address(fd, 1);
    if (strcmp(name, "sockname") == 0)
        return address(fd, 0);
    if (strcmp(name, "family") == 0) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
            return PyErr_SetFromErrno(PyExc_OSError);
        return PyLong_FromLong(ss.ss_family);
    }
    return Py_NewRef(dflt);
}

static PyObject *
tr_get_extra_info(ppy_transport *t, PyObject *args, PyObject *kwargs)
{
    return on_loop(t, do_get_extra_info, args, kwargs);
}

static PyObject *
tr_reduce(ppy_transport *t, PyObject *unused)
{
    (void)t; (void)unused;
    PyErr_SetString(PyExc_TypeError,
                    "a Transport belongs to one connection in one worker and "
                    "cannot be pickled or sent to another interpreter");
    return NULL;
}

static PyObject *
tr_get_shared(ppy_transport *t, void *c)
{
    (void)c;
    return Py_NewRef(t->shared);
}

static PyObject *
tr_get_worker_id(ppy_transport *t, void *c)
{
    (void)c;
    return PyLong_FromLong(t->lt->index);
}

static PyObject *
tr_repr(ppy_transport *t)
{
    /* Any thread: reads one field under the GIL (see the top). */
    int fd = (t->pc && t->pc->c) ? pp_conn_fd(t->pc->c) : -1;

    if (fd < 0)
        return PyUnicode_FromFormat("<pyparallel.Transport closed, worker %d>",
                                    t->lt->index);
    return PyUnicode_FromFormat("<pyparallel.Transport fd=%d, worker %d>", fd,
                                t->lt->index);
}

static void
tr_dealloc(ppy_transport *t)
{
    PyTypeObject *tp = Py_TYPE(t);

    Py_CLEAR(t->shared);
    PyObject_Free(t);
    Py_DECREF(tp);
}

static PyMethodDef tr_methods[] = {
    {"write", (PyCFunction)tr_write, METH_O,
     "write(data): queue bytes, str (UTF-8) or any bytes-like"},
    {"writelines", (PyCFunction)tr_writelines, METH_O,
     "writelines(iterable): write each item"},
    {"sendfile", (PyCFunction)(void (*)(void))tr_sendfile,
     METH_VARARGS | METH_KEYWORDS,
     "sendfile(path, offset=0, count=None, before=b'', after=b''): queue "
     "before, count bytes of the file from offset (None: to its end), then "
     "after; the file goes out with sendfile(2)"},
    {"close", (PyCFunction)tr_close, METH_NOARGS,
     "close(): send what is queued, then close"},
    {"abort", (PyCFunction)tr_abort, METH_NOARGS,
     "abort(): close now, dropping queued output"},
    {"write_eof", (PyCFunction)tr_write_eof, METH_NOARGS,
     "write_eof(): shut the write side once queued data is sent"},
    {"pause_reading", (PyCFunction)tr_pause_reading, METH_NOARGS, NULL},
    {"resume_reading", (PyCFunction)tr_resume_reading, METH_NOARGS, NULL},
    {"is_closing", (PyCFunction)tr_is_closing, METH_NOARGS, NULL},
    {"get_write_buffer_size", (PyCFunction)tr_get_write_buffer_size,
     METH_NOARGS, "bytes queued and not yet handed to the kernel"},
    {"get_extra_info", (PyCFunction)(void (*)(void))tr_get_extra_info,
     METH_VARARGS | METH_KEYWORDS,
     "get_extra_info(name, default=None): 'peername', 'sockname' or 'family'"},
    {"__reduce__", (PyCFunction)tr_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef tr_getset[] = {
    {"shared", (getter)tr_get_shared, NULL,
     "the frozen object given to server()/client() as shared=, or None", NULL},
    {"worker_id", (getter)tr_get_worker_id, NULL,
     "the worker that owns this connection", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot tr_slots[] = {
    {Py_tp_dealloc, tr_dealloc},
    {Py_tp_repr, tr_repr},
    {Py_tp_methods, tr_methods},
    {Py_tp_getset, tr_getset},
    {Py_tp_doc, "One connection's transport (worker-side only)."},
    {0, NULL}
};

PyType_Spec ppy_transport_spec = {
    .name = "pyparallel._pyparallel.Transport",
    .basicsize = sizeof(ppy_transport),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = tr_slots,
};
