/* protocol.c -- driving a PyParallel protocol class from engine callbacks.
 *
 * The life of a connection, on its worker's loop thread:
 *
 *   on_open    a ppy_pconn is carved from the connection's arena; the
 *              Transport and a fresh protocol instance are made;
 *              initial_bytes_to_send goes out, then connection_made runs;
 *   on_read    data_received (or lines_received with every complete line)
 *              runs; its return value is queued, and the engine flushes the
 *              whole read pass's output with one sendmsg;
 *   on_sent    send_complete(transport, id) once the data returned with id
 *              has reached the kernel; what it returns goes out next;
 *   on_eof     in lines mode a last unterminated line is delivered; then
 *              eof_received decides between closing and half-open;
 *   on_close   connection_lost(transport, exc); the transport is detached
 *              and the protocol instance dropped: nothing of the
 *              connection outlives it.
 *
 * Callbacks are found on the class once per endpoint.  A plain function is
 * called as f(instance, transport, ...) with no bound-method object; any
 * other kind of attribute is looked up on the instance at each call.
 *
 * A callback that raises goes to exception_handler when there is one (the
 * connection stays open unless the handler closes it); otherwise it is
 * logged with its traceback and the connection is aborted, with the
 * exception passed on to connection_lost.
 */
#include "ppy_io.h"

#include <errno.h>
#include <netdb.h>
#include <string.h>

static const char *const cb_names[PPY_CB_COUNT] = {
    "connection_made", "data_received", "lines_received", "send_complete",
    "eof_received", "connection_lost", "exception_handler",
};

/* ---- the endpoint ------------------------------------------------------- */

/* getattr(obj, name) into *out, or NULL there when it has no such
 * attribute (PyObject_GetOptionalAttrString is 3.13+).  Returns 0 or -1. */
static int
optional_attr(PyObject *obj, const char *name, PyObject **out)
{
    *out = PyObject_GetAttrString(obj, name);
    if (*out == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
    }
    return 0;
}

int
ppy_endpoint_set_protocol(ppy_endpoint *ep, PyObject *cls)
{
    PyObject *lines = NULL;
    int i, truth = 0;

    if (!PyType_Check(cls)) {
        PyErr_Format(PyExc_TypeError,
                     "protocol must be a class (each connection gets an "
                     "instance), not %.100s", Py_TYPE(cls)->tp_name);
        return -1;
    }
    ep->cls = Py_NewRef(cls);
    for (i = 0; i < PPY_CB_COUNT; i++) {
        if (optional_attr(cls, cb_names[i], &ep->cb[i]) < 0)
            return -1;
        if (ep->cb[i] == Py_None)
            Py_CLEAR(ep->cb[i]);
    }
    if (optional_attr(cls, "initial_bytes_to_send", &ep->initial) < 0)
        return -1;
    if (ep->initial == Py_None)
        Py_CLEAR(ep->initial);
    if (optional_attr(cls, "lines_mode", &lines) < 0)
        return -1;
    if (lines && (truth = PyObject_IsTrue(lines)) < 0) {
        Py_DECREF(lines);
        return -1;
    }
    Py_XDECREF(lines);
    ep->lines = truth;
    if (ep->lines && ep->cb[PPY_CB_LINES_RECEIVED] == NULL) {
        PyErr_Format(PyExc_TypeError,
                     "protocol %.200s sets lines_mode = True but defines no "
                     "lines_received(self, transport, lines)",
                     ((PyTypeObject *)cls)->tp_name);
        return -1;
    }
    if (!ep->lines && ep->cb[PPY_CB_LINES_RECEIVED] != NULL) {
        PyErr_Format(PyExc_TypeError,
                     "protocol %.200s defines lines_received() but not "
                     "lines_mode = True; set it to get lines",
                     ((PyTypeObject *)cls)->tp_name);
        return -1;
    }
    return 0;
}

int
ppy_check_shared(PyObject *shared)
{
    if (shared == Py_None || ppy_is_shareable(shared))
        return 0;
    PyErr_Format(PyExc_TypeError,
                 "shared must be frozen, since every worker reads it by "
                 "pointer: pass pyparallel.freeze(obj) (this %.100s is not "
                 "frozen)", Py_TYPE(shared)->tp_name);
    return -1;
}

void
ppy_endpoint_clear(ppy_endpoint *ep)
{
    int i;

    Py_CLEAR(ep->cls);
    Py_CLEAR(ep->shared);
    for (i = 0; i < PPY_CB_COUNT; i++)
        Py_CLEAR(ep->cb[i]);
    Py_CLEAR(ep->initial);
    Py_CLEAR(ep->result);
    Py_CLEAR(ep->failure);
}

/* ---- errors ------------------------------------------------------------- */

PyObject *
ppy_error_from_code(int err, const char *context)
{
    PyObject *cls = PyExc_OSError, *socket = NULL, *msg, *exc = NULL;
    int code = -err;
    const char *reason;

    if (context == NULL && err == -ETIMEDOUT)
        return PyObject_CallFunction(PyExc_TimeoutError, "is", ETIMEDOUT,
                                     "connection closed by pyparallel: no "
                                     "input or output for idle_timeout");
    if (context == NULL && err == -ENOBUFS)
        return PyObject_CallFunction(PyExc_BufferError, "s",
                                     "connection closed by pyparallel: more "
                                     "than read_limit bytes of input were "
                                     "left unconsumed (a line too long?)");
    if (PP_NET_IS_EAI(err)) {
        if ((socket = PyImport_ImportModule("socket")) == NULL ||
            (cls = PyObject_GetAttrString(socket, "gaierror")) == NULL) {
            Py_XDECREF(socket);
            return NULL;
        }
        code = err + PP_NET_EAI_BASE;
        reason = gai_strerror(code);
    } else {
        reason = strerror(-err);
    }
    /* OSError(errno, message) picks the subclass (ConnectionRefusedError...)
     * and sets .errno and .strerror. */
    msg = context ? PyUnicode_FromFormat("%s: %s", context, reason)
                  : PyUnicode_FromString(reason);
    if (msg)
        exc = PyObject_CallFunction(cls, "iO", code, msg);
    Py_XDECREF(msg);
    if (socket) {
        Py_DECREF(cls);
        Py_DECREF(socket);
    }
    return exc;
}

/* ---- calling back --------------------------------------------------------- */

/* Calls callback `which` with (transport[, arg]).  New reference or NULL. */
static PyObject *
call_cb(ppy_pconn *pc, int which, PyObject *arg)
{
    PyObject *f = pc->ep->cb[which], *args[3], *bound, *r;
    size_t n = arg ? 3 : 2;

    if (PyFunction_Check(f)) {
        args[0] = pc->protocol;
        args[1] = pc->transport;
        args[2] = arg;
        return PyObject_Vectorcall(f, args, n, NULL);
    }
    bound = PyObject_GetAttrString(pc->protocol, cb_names[which]);
    if (bound == NULL)
        return NULL;
    args[0] = NULL;
    args[1] = pc->transport;
    args[2] = arg;
    r = PyObject_Vectorcall(bound, args + 1,
                            (n - 1) | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(bound);
    return r;
}

static void
log_failure(ppy_pconn *pc, const char *where)
{
    char what[256];
    const char *cls = pc->ep->cls ? ((PyTypeObject *)pc->ep->cls)->tp_name : "?";

    snprintf(what, sizeof what, "%s.%s()", cls, where);
    ppy_lthread_log_error(pc->ep->lt, what, pc->transport);
}

/* The pending exception came out of callback `where`: hand it to the
 * exception handler, or log it and abort the connection.  Clears it. */
static void
callback_failed(ppy_pconn *pc, const char *where, int handler_allowed)
{
    ppy_endpoint *ep = pc->ep;
    PyObject *exc, *own, *r;

    ep->errors++;
    if (handler_allowed && ep->cb[PPY_CB_EXCEPTION_HANDLER] && pc->protocol) {
        exc = PyErr_GetRaisedException();
        r = call_cb(pc, PPY_CB_EXCEPTION_HANDLER, exc);
        if (r != NULL) {
            Py_DECREF(r);
            Py_DECREF(exc);
            return;
        }
        /* The handler raised too: log what it was handling, then its own
         * (which then closes the connection, below). */
        ep->errors++;
        own = PyErr_GetRaisedException();
        PyErr_SetRaisedException(exc);
        log_failure(pc, where);
        PyErr_SetRaisedException(own);
        where = "exception_handler";
    }
    exc = PyErr_GetRaisedException();
    if (exc == NULL)
        exc = PyObject_CallFunction(PyExc_SystemError, "s",
                                    "a callback failed without an exception");
    if (exc == NULL)
        exc = Py_NewRef(Py_None);
    PyErr_SetRaisedException(Py_NewRef(exc));
    log_failure(pc, where);
    if (ep->task && ep->failure == NULL)
        ep->failure = Py_NewRef(exc);
    if (pc->error == NULL)
        pc->error = Py_NewRef(exc);
    Py_DECREF(exc);
    if (pc->c)
        pp_conn_abort(pc->c);
}

/* Queues what a callback returned; a send_complete marker follows it when
 * the protocol wants one.  Consumes r. */
static void
send_result(ppy_pconn *pc, PyObject *r, const char *where)
{
    int sent;

    if (r == Py_None) {
        Py_DECREF(r);
        return;
    }
    sent = pc->c ? ppy_transport_send_value(pc->transport, r) : 0;
    Py_DECREF(r);
    if (sent < 0) {
        callback_failed(pc, where, 1);
        return;
    }
    if (sent > 0 && pc->ep->cb[PPY_CB_SEND_COMPLETE] && pc->c &&
        pp_conn_mark(pc->c, ++pc->send_id) < 0)
        pc->send_id--;           /* closing: no send_complete will come */
}

/* ---- connection callbacks --------------------------------------------------- */

static void
proto_open(pp_conn *c)
{
    ppy_endpoint *ep = pp_conn_data(c);
    ppy_pconn *pc = pp_conn_alloc(c, sizeof(*pc));
    PyObject *r;

    if (pc == NULL) {
        pp_conn_abort(c);
        return;
    }
    memset(pc, 0, sizeof(*pc));
    pc->kind = PPY_KIND_PCONN;
    pc->c = c;
    pc->ep = ep;
    pp_conn_set_data(c, pc);
    if (ep->live) {
        pc->counted = 1;
        if (atomic_fetch_add(ep->live, 1) >= ep->max_live && ep->max_live) {
            /* Over the server-wide limit (other workers hold the rest):
             * closed before the protocol sees it. */
            pp_conn_abort(c);
            return;
        }
    }
    pc->transport = ppy_transport_new(ep->lt, pc, ep->shared);
    if (pc->transport == NULL) {
        callback_failed(pc, "(making the transport)", 0);
        return;
    }
    pc->protocol = PyObject_CallNoArgs(ep->cls);
    if (pc->protocol == NULL) {
        callback_failed(pc, "__init__", 0);
        return;
    }
    if (ep->initial) {
        r = PyCallable_Check(ep->initial)
            ? PyObject_CallMethod(pc->protocol, "initial_bytes_to_send", NULL)
            : Py_NewRef(ep->initial);
        if (r == NULL)
            callback_failed(pc, "initial_bytes_to_send", 1);
        else
            send_result(pc, r, "initial_bytes_to_send");
    }
    if (ep->cb[PPY_CB_CONNECTION_MADE] && pc->c && !pp_conn_closing(c)) {
        r = call_cb(pc, PPY_CB_CONNECTION_MADE, NULL);
        if (r == NULL)
            callback_failed(pc, "connection_made", 1);
        else
            Py_DECREF(r);
    }
}

/* Splits data[0..len) -- which ends with '\n' -- into a list of lines
 * without their "\n" or "\r\n".  New reference. */
static PyObject *
split_lines(const char *data, size_t len)
{
    PyObject *lines = PyList_New(0);
    const char *p = data, *end = data + len;

    while (lines && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        const char *e = (stop > p && stop[-1] == '\r') ? stop - 1 : stop;
        PyObject *line = PyBytes_FromStringAndSize(p, e - p);

        if (line == NULL || PyList_Append(lines, line) < 0) {
            Py_XDECREF(line);
            Py_CLEAR(lines);
            break;
        }
        Py_DECREF(line);
        p = nl ? nl + 1 : end;
    }
    return lines;
}

static size_t
proto_read(pp_conn *c, const char *data, size_t len)
{
    ppy_pconn *pc = pp_conn_data(c);
    ppy_endpoint *ep = pc->ep;
    PyObject *arg, *r;
    size_t used = len, scanned = pc->scanned;
    int which;

    pc->scanned = 0;             /* unless lines mode keeps a tail below */
    if (pc->protocol == NULL || pp_conn_closing(c))
        return len;
    if (ep->lines) {
        /* Only the bytes after what earlier reads searched: the engine
         * hands the unconsumed tail back first, and that tail -- what
         * followed the last newline -- holds none.  Searching it again on
         * every read would be quadratic in a long line. */
        size_t from = scanned <= len ? scanned : 0;
        const char *nl = memrchr(data + from, '\n', len - from);

        ep->line_scanned += len - from;
        if (nl == NULL) {
            pc->scanned = len;
            return 0;            /* wait for the end of the line */
        }
        used = (size_t)(nl - data) + 1;
        arg = split_lines(data, used);
        which = PPY_CB_LINES_RECEIVED;
    } else if (ep->cb[PPY_CB_DATA_RECEIVED]) {
        arg = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
        which = PPY_CB_DATA_RECEIVED;
    } else {
        return len;              /* nobody listens: discard */
    }
    if (arg == NULL) {
        callback_failed(pc, cb_names[which], 0);
        return len;
    }
    r = call_cb(pc, which, arg);
    Py_DECREF(arg);
    if (r == NULL)
        callback_failed(pc, cb_names[which], 1);
    else
        send_result(pc, r, cb_names[which]);
    if (ep->lines)
        pc->scanned = len - used;    /* after the last newline: none */
    return used;
}

static void
proto_eof(pp_conn *c)
{
    ppy_pconn *pc = pp_conn_data(c);
    ppy_endpoint *ep = pc->ep;
    PyObject *r;
    int keep = 0;

    if (pc->protocol && ep->lines) {
        size_t len;
        const char *rest = pp_conn_unconsumed(c, &len);

        if (len > 0) {
            PyObject *lines = split_lines(rest, len);
            r = lines ? call_cb(pc, PPY_CB_LINES_RECEIVED, lines) : NULL;
            Py_XDECREF(lines);
            if (r == NULL)
                callback_failed(pc, "lines_received", 1);
            else
                send_result(pc, r, "lines_received");
        }
    }
    if (pc->protocol && pc->c && !pp_conn_closing(c) && ep->cb[PPY_CB_EOF_RECEIVED]) {
        r = call_cb(pc, PPY_CB_EOF_RECEIVED, NULL);
        if (r == NULL) {
            callback_failed(pc, "eof_received", 1);
        } else {
            keep = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (keep < 0) {
                callback_failed(pc, "eof_received", 1);
                keep = 0;
            }
        }
    }
    if (!keep && pc->c && !pp_conn_closing(c))
        pp_conn_close(c);
}

static void
proto_sent(pp_conn *c, uint64_t id)
{
    ppy_pconn *pc = pp_conn_data(c);
    PyObject *arg, *r;

    if (pc->protocol == NULL || pp_conn_closing(c) ||
        pc->ep->cb[PPY_CB_SEND_COMPLETE] == NULL)
        return;
    if ((arg = PyLong_FromUnsignedLongLong(id)) == NULL) {
        callback_failed(pc, "send_complete", 0);
        return;
    }
    r = call_cb(pc, PPY_CB_SEND_COMPLETE, arg);
    Py_DECREF(arg);
    if (r == NULL)
        callback_failed(pc, "send_complete", 1);
    else
        send_result(pc, r, "send_complete");
}

static void
proto_close(pp_conn *c, int err)
{
    void *data = pp_conn_data(c);
    ppy_endpoint *ep;
    ppy_pconn *pc;
    PyObject *exc, *r;

    if (ppy_data_kind(data) == PPY_KIND_ENDPOINT) {
        /* Never opened: a connect that failed, or no memory. */
        ep = data;
        /* err 0: aborted while connecting (Server or pool shutting down). */
        if (ep->failure == NULL)
            ep->failure = ppy_error_from_code(err ? err : -ECANCELED, NULL);
        if (ep->failure == NULL)
            ep->failure = PyErr_GetRaisedException();
        if (ep->on_conn_closed)
            ep->on_conn_closed(ep);
        return;
    }
    pc = data;
    ep = pc->ep;
    pc->c = NULL;
    if (pc->counted)
        atomic_fetch_sub(ep->live, 1);
    if (pc->protocol && ep->cb[PPY_CB_CONNECTION_LOST]) {
        exc = pc->error ? Py_NewRef(pc->error)
            : err ? ppy_error_from_code(err, NULL) : Py_NewRef(Py_None);
        r = exc ? call_cb(pc, PPY_CB_CONNECTION_LOST, exc) : NULL;
        Py_XDECREF(exc);
        if (r == NULL) {
            /* Nothing left to close: log it, and fail a client's Future. */
            ep->errors++;
            exc = PyErr_GetRaisedException();
            if (ep->task && ep->failure == NULL)
                ep->failure = Py_NewRef(exc);
            PyErr_SetRaisedException(exc);
            log_failure(pc, "connection_lost");
        } else if (ep->task && ep->result == NULL) {
            ep->result = r;
        } else {
            Py_DECREF(r);
        }
    }
    if (pc->transport)
        ppy_transport_detach(pc->transport);
    Py_CLEAR(pc->transport);
    Py_CLEAR(pc->protocol);
    Py_CLEAR(pc->error);
    if (ep->on_conn_closed)
        ep->on_conn_closed(ep);
}

const pp_conn_handler ppy_proto_handler = {
    .on_open = proto_open,
    .on_read = proto_read,
    .on_eof = proto_eof,
    .on_sent = proto_sent,
    .on_close = proto_close,
};

/* ---- the C-only echo (the benchmark's ceiling) ------------------------------ */

static size_t
native_read(pp_conn *c, const char *data, size_t len)
{
    /* -EPIPE: closing, nothing more goes out anyway.  -ENOMEM: an echo
     * with a hole in it would be worse than none; close. */
    if (pp_conn_write(c, data, len) == -ENOMEM)
        pp_conn_abort(c);
    return len;
}

static void
native_close(pp_conn *c, int err)
{
    ppy_endpoint *ep = pp_conn_data(c);

    (void)err;
    if (ep->on_conn_closed)
        ep->on_conn_closed(ep);
}

const pp_conn_handler ppy_native_echo_handler = {
    .on_read = native_read,
    .on_close = native_close,
};
