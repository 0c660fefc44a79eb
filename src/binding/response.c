/* response.c -- pyparallel.http.Response, what a native handler returns to
 * choose the status, headers or content type.
 *
 * A C type (one per interpreter, like the module's others) rather than a
 * Python class because a handler makes one per request: called with
 * keywords, a Python class's __init__ costs a tuple and a dict per call,
 * this one's vectorcall neither.  The HTTP site reads its four fields from
 * their slots (http.c, field()).  Subclasses get the ordinary tp_new/
 * tp_init path and may add attributes.
 */
#include "ppy_binding.h"

#include <stddef.h>

typedef struct {
    PyObject_HEAD
    PyObject *body;
    PyObject *status;
    PyObject *headers;
    PyObject *content_type;
} ppy_response;

static int
response_fill(ppy_response *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"body", "status", "headers", "content_type"};
    PyObject *v[4] = {NULL, NULL, NULL, NULL};
    Py_ssize_t i, nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;

    if (nargs > 4) {
        PyErr_Format(PyExc_TypeError, "Response() takes at most 4 positional arguments "
                     "(%zd given)", nargs);
        return -1;
    }
    for (i = 0; i < nargs; i++)
        v[i] = args[i];
    for (i = 0; i < nk; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        int j;
        for (j = 0; j < 4; j++)
            if (PyUnicode_CompareWithASCIIString(k, names[j]) == 0)
                break;
        if (j == 4) {
            PyErr_Format(PyExc_TypeError, "Response() got an unexpected keyword argument %R", k);
            return -1;
        }
        if (v[j]) {
            PyErr_Format(PyExc_TypeError, "Response() got multiple values for argument '%s'",
                         names[j]);
            return -1;
        }
        v[j] = args[nargs + i];
    }
    Py_XSETREF(r->body, v[0] ? Py_NewRef(v[0]) : PyBytes_FromStringAndSize(NULL, 0));
    Py_XSETREF(r->status, v[1] ? Py_NewRef(v[1]) : PyLong_FromLong(200));
    Py_XSETREF(r->headers, Py_NewRef(v[2] ? v[2] : Py_None));
    Py_XSETREF(r->content_type, Py_NewRef(v[3] ? v[3] : Py_None));
    return r->status && r->body ? 0 : -1;
}

static PyObject *
response_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyTypeObject *tp = (PyTypeObject *)type;
    ppy_response *r = (ppy_response *)tp->tp_alloc(tp, 0);

    if (r == NULL)
        return NULL;
    if (response_fill(r, args, PyVectorcall_NARGS(nargsf), kwnames) < 0) {
        Py_DECREF(r);
        return NULL;
    }
    return (PyObject *)r;
}

static int
response_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *stack[8], *kwnames = NULL, *k, *v;
    Py_ssize_t n = PyTuple_GET_SIZE(args), nk = kwargs ? PyDict_GET_SIZE(kwargs) : 0, i = 0, pos = 0;
    int rc;

    if (n + nk > 8) {
        PyErr_SetString(PyExc_TypeError, "Response() takes at most 4 arguments");
        return -1;
    }
    for (i = 0; i < n; i++)
        stack[i] = PyTuple_GET_ITEM(args, i);
    if (nk) {
        if ((kwnames = PyTuple_New(nk)) == NULL)
            return -1;
        while (PyDict_Next(kwargs, &pos, &k, &v)) {
            PyTuple_SET_ITEM(kwnames, i - n, Py_NewRef(k));
            stack[i++] = v;
        }
    }
    rc = response_fill((ppy_response *)self, stack, n, kwnames);
    Py_XDECREF(kwnames);
    return rc;
}

static int
response_traverse(ppy_response *r, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(r));
    Py_VISIT(r->body);
    Py_VISIT(r->status);
    Py_VISIT(r->headers);
    Py_VISIT(r->content_type);
    return 0;
}

static int
response_clear(ppy_response *r)
{
    Py_CLEAR(r->body);
    Py_CLEAR(r->status);
    Py_CLEAR(r->headers);
    Py_CLEAR(r->content_type);
    return 0;
}

static void
response_dealloc(ppy_response *r)
{
    PyTypeObject *tp = Py_TYPE(r);

    PyObject_GC_UnTrack(r);
    response_clear(r);
    tp->tp_free(r);
    Py_DECREF(tp);
}

static PyObject *
response_repr(ppy_response *r)
{
    return PyUnicode_FromFormat("<Response %R>", r->status ? r->status : Py_None);
}

static PyMemberDef response_members[] = {
    {"body", Py_T_OBJECT_EX, offsetof(ppy_response, body), 0,
     "bytes, str, a dict or list (sent as JSON), or None"},
    {"status", Py_T_OBJECT_EX, offsetof(ppy_response, status), 0, "the status code (200)"},
    {"headers", Py_T_OBJECT_EX, offsetof(ppy_response, headers), 0,
     "a dict or (name, value) pairs, or None"},
    {"content_type", Py_T_OBJECT_EX, offsetof(ppy_response, content_type), 0,
     "the Content-Type, or None for the body's default"},
    {NULL, 0, 0, 0, NULL}
};

PyDoc_STRVAR(response_doc,
"Response(body=b'', status=200, headers=None, content_type=None)\n--\n\n"
"What a handler returns to choose the status, headers or content type.\n"
"body: bytes, str, a dict or list (sent as JSON), or None.");

static PyType_Slot response_slots[] = {
    {Py_tp_doc, (void *)response_doc},
    {Py_tp_init, response_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_traverse, response_traverse},
    {Py_tp_clear, response_clear},
    {Py_tp_dealloc, response_dealloc},
    {Py_tp_repr, response_repr},
    {Py_tp_members, response_members},
    {0, NULL},
};

PyType_Spec ppy_response_spec = {
    .name = "pyparallel.http.Response",
    .basicsize = sizeof(ppy_response),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = response_slots,
};

void
ppy_response_ready(PyTypeObject *tp)
{
    tp->tp_vectorcall = response_vectorcall;    /* Response(...) itself */
}
