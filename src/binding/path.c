/* path.c -- "data['users'][3]": where inside a value a walk failed. */
#include "ppy_binding.h"

void
ppy_path_push(ppy_path *p, char kind, PyObject *key)
{
    PyObject *exc, *step;

    /* Keep the pending exception: this runs while it is being raised. */
    exc = PyErr_GetRaisedException();
    if (p->steps == NULL)
        p->steps = PyList_New(0);
    if (p->steps != NULL) {
        step = Py_BuildValue("(CO)", kind, key);
        if (step == NULL || PyList_Append(p->steps, step) < 0)
            PyErr_Clear();
        Py_XDECREF(step);
    } else {
        PyErr_Clear();
    }
    PyErr_SetRaisedException(exc);
}

PyObject *
ppy_path_render(ppy_path *p, const char *root)
{
    PyObject *out = PyUnicode_FromString(root), *piece;
    Py_ssize_t i;

    if (out == NULL || p->steps == NULL)
        return out;
    /* Steps were recorded innermost first. */
    for (i = PyList_GET_SIZE(p->steps) - 1; i >= 0 && out; i--) {
        PyObject *step = PyList_GET_ITEM(p->steps, i);
        int kind = (int)PyUnicode_READ_CHAR(PyTuple_GET_ITEM(step, 0), 0);
        PyObject *key = PyTuple_GET_ITEM(step, 1);

        if (kind == '{')
            piece = PyUnicode_FromFormat("{%R}", key);
        else
            piece = PyUnicode_FromFormat("[%R]", key);
        if (piece == NULL) {
            Py_CLEAR(out);
            break;
        }
        Py_SETREF(out, PyUnicode_Concat(out, piece));
        Py_DECREF(piece);
    }
    return out;
}

void
ppy_path_clear(ppy_path *p)
{
    Py_CLEAR(p->steps);
}

void
ppy_path_reraise(ppy_path *p, const char *root, PyObject *cls)
{
    PyObject *exc, *where, *msg = NULL;

    if (!PyErr_ExceptionMatches(cls))
        return;
    exc = PyErr_GetRaisedException();
    where = ppy_path_render(p, root);
    if (where)
        msg = PyUnicode_FromFormat("%U: %S", where, exc);
    if (msg) {
        PyErr_SetObject(cls, msg);
        Py_DECREF(msg);
        Py_DECREF(exc);
    } else {
        PyErr_Clear();
        PyErr_SetRaisedException(exc);
    }
    Py_XDECREF(where);
}
