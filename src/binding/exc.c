/* exc.c -- exceptions as text and across interpreters.
 *
 * An exception crosses between interpreters packed by
 * pyparallel._errors.pack_exception (pickled, with its traceback as text)
 * and is rebuilt on the other side by _errors.rebuild.
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
