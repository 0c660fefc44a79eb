/* exc.c -- exceptions as text, across interpreters, and to the main thread.
 *
 * An exception crosses between interpreters packed by
 * pyparallel._errors.pack_exception (pickled, with its traceback as text)
 * and is rebuilt on the other side by _errors.rebuild.
 *
 * A SystemExit or KeyboardInterrupt raised on one of pyparallel's own main
 * interpreter threads (a main-thread call, a Future callback) must not end
 * the process from there -- PyErr_Print() would exit from the wrong thread
 * -- so it is handed to the main thread as a signal handler's exception
 * would be: a pending call raises it there at the next bytecode, or in any
 * pyparallel wait the main thread is blocked in.
 */
#include "ppy_binding.h"

#include <stdlib.h>
#include <string.h>

/* The current exception as "Traceback ...\n" text (malloc'd), clearing it.
 * Never NULL. */
char *
ppy_exception_text(void)
{
    PyObject *exc = PyErr_GetRaisedException(), *tb = NULL, *lines = NULL,
             *text = NULL, *empty = NULL;
    const char *s = NULL;
    char *res;

    if (exc != NULL) {
        tb = PyImport_ImportModule("traceback");
        if (tb)
            lines = PyObject_CallMethod(tb, "format_exception", "O", exc);
        empty = PyUnicode_FromString("");
        if (lines && empty)
            text = PyUnicode_Join(empty, lines);
        if (text == NULL) {
            PyErr_Clear();
            text = PyObject_Str(exc);
        }
        if (text)
            s = PyUnicode_AsUTF8(text);
    }
    PyErr_Clear();
    res = strdup(s ? s : "(no details)");
    Py_XDECREF(exc);
    Py_XDECREF(tb);
    Py_XDECREF(lines);
    Py_XDECREF(text);
    Py_XDECREF(empty);
    return res ? res : strdup("");
}

/* Calls pyparallel._errors.rebuild(*packed) in the current interpreter.
 * New reference to an exception instance, or NULL. */
PyObject *
ppy_rebuild_exception(ppy_state *st, PyObject *packed)
{
    PyObject *rebuild, *exc;

    if (st->errors_module == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "pyparallel._errors is not loaded");
        return NULL;
    }
    rebuild = PyObject_GetAttrString(st->errors_module, "rebuild");
    if (rebuild == NULL)
        return NULL;
    exc = PyTuple_Check(packed) ? PyObject_Call(rebuild, packed, NULL) : NULL;
    Py_DECREF(rebuild);
    if (exc == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_SystemError, "malformed packed exception");
    return exc;
}

/* The exception waiting for the main thread (main GIL). */
static PyObject *exc_for_main;

static int
deliver_to_main(void *unused)
{
    PyObject *exc = exc_for_main;

    (void)unused;
    exc_for_main = NULL;
    if (exc == NULL)
        return 0;
    PyErr_SetRaisedException(exc);
    return -1;
}

void
ppy_raise_in_main(void)
{
    PyObject *exc = PyErr_GetRaisedException();

    if (exc == NULL)
        return;
    if (exc_for_main != NULL) {
        /* The first one is on its way; the process is ending anyway. */
        Py_DECREF(exc);
        return;
    }
    exc_for_main = exc;
    if (Py_AddPendingCall(deliver_to_main, NULL) < 0) {
        exc_for_main = NULL;
        PySys_WriteStderr("pyparallel: could not pass an exception to the "
                          "main thread:\n");
        PyErr_DisplayException(exc);
        Py_DECREF(exc);
    }
}

int
ppy_is_exit_exception(PyObject *exc)
{
    return exc && (PyErr_GivenExceptionMatches(exc, PyExc_SystemExit) ||
                   PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt));
}

void
ppy_pack_exception(ppy_state *st, PyObject *pack, PyObject *exc, pp_buf *out,
                   const char *fallback_type, const char *fallback_msg)
{
    PyObject *packed = pack && exc ? PyObject_CallOneArg(pack, exc) : NULL, *msg;

    out->len = 0;
    if (packed != NULL && ppy_encode(st, packed, out, "exception") == 0) {
        Py_DECREF(packed);
        return;
    }
    /* The exception itself cannot travel (or pyparallel is unusable here,
     * in a worker that failed to start): send its text, named so that the
     * other side rebuilds the right class. */
    PyErr_Clear();
    out->len = 0;
    Py_XDECREF(packed);
    msg = fallback_msg ? PyUnicode_FromString(fallback_msg)
                       : exc ? PyObject_Str(exc) : NULL;
    if (msg == NULL)
        PyErr_Clear();
    packed = Py_BuildValue("(OsOs)", Py_None, fallback_type,
                           msg ? msg : Py_None, "");
    Py_XDECREF(msg);
    if (packed == NULL || ppy_encode(st, packed, out, "exception") < 0)
        PyErr_Clear();
    Py_XDECREF(packed);
}
