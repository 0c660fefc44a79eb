/* frozenmap.c -- FrozenMap: the frozen form of a dict.
 *
 * A FrozenMap is a real dict subclass, so json.dumps, ==, the Mapping ABC
 * and every C fast path that takes a dict read it directly; its storage is
 * filled once by freeze() and never changes afterwards.  Every mutating
 * entry point raises TypeError.
 *
 * The type is static and shared by all interpreters of the process, since
 * its instances are.  Its mutable state -- __dict__ and the descriptors in
 * it, subclass list, weakref list -- is kept per interpreter, the way
 * CPython keeps dict's own (static_type.c); it cannot be subclassed, and
 * being a static type it is immutable.
 */
#include "ppy_binding.h"

static PyObject *
frozen_error(const char *what)
{
    PyErr_Format(PyExc_TypeError,
                 "FrozenMap is frozen: %s would modify shared data; "
                 "make a mutable copy with dict(m) or m.copy() instead", what);
    return NULL;
}

static int
fm_ass_subscript(PyObject *self, PyObject *key, PyObject *value)
{
    (void)self; (void)key;
    frozen_error(value ? "item assignment" : "item deletion");
    return -1;
}

static PyObject *
fm_inplace_or(PyObject *self, PyObject *other)
{
    (void)self; (void)other;
    return frozen_error("|=");
}

#define FM_MUTATOR(name)                                                    \
    static PyObject *                                                       \
    fm_##name(PyObject *self, PyObject *args, PyObject *kwargs)             \
    {                                                                       \
        (void)self; (void)args; (void)kwargs;                               \
        return frozen_error(#name "()");                                    \
    }
FM_MUTATOR(update)
FM_MUTATOR(pop)
FM_MUTATOR(popitem)
FM_MUTATOR(setdefault)
FM_MUTATOR(clear)
#undef FM_MUTATOR

/* Returns a new plain dict: the mutable copy. */
static PyObject *
fm_copy(PyObject *self, PyObject *unused)
{
    (void)unused;
    return PyDict_Copy(self);
}

static PyObject *
fm_reduce(PyObject *self, PyObject *unused)
{
    PyObject *plain = PyDict_Copy(self), *res;

    (void)unused;
    if (plain == NULL)
        return NULL;
    res = Py_BuildValue("(O(N))", (PyObject *)Py_TYPE(self), plain);
    return res;
}

static PyObject *
fm_repr(PyObject *self)
{
    PyObject *inner = PyDict_Type.tp_repr(self), *res;

    if (inner == NULL)
        return NULL;
    res = PyUnicode_FromFormat("FrozenMap(%U)", inner);
    Py_DECREF(inner);
    return res;
}

/* FrozenMap(mapping_or_iterable=(), **kwargs): the same as
 * pyparallel.freeze(dict(...)). */
static PyObject *
fm_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *plain, *mod, *res;

    (void)type;
    plain = PyObject_Call((PyObject *)&PyDict_Type, args, kwargs);
    if (plain == NULL)
        return NULL;
    mod = PyImport_ImportModule("pyparallel._pyparallel");
    if (mod == NULL) {
        Py_DECREF(plain);
        return NULL;
    }
    res = ppy_freeze(ppy_state_of(mod), plain);
    Py_DECREF(mod);
    Py_DECREF(plain);
    return res;
}

/* dict.__init__ would fill the (already frozen) map again. */
static int
fm_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self; (void)args; (void)kwargs;
    return 0;
}

static PyMethodDef fm_methods[] = {
    {"update", (PyCFunction)(void (*)(void))fm_update,
     METH_VARARGS | METH_KEYWORDS, "Not allowed: a FrozenMap is frozen."},
    {"pop", (PyCFunction)(void (*)(void))fm_pop,
     METH_VARARGS | METH_KEYWORDS, "Not allowed: a FrozenMap is frozen."},
    {"popitem", (PyCFunction)(void (*)(void))fm_popitem,
     METH_VARARGS | METH_KEYWORDS, "Not allowed: a FrozenMap is frozen."},
    {"setdefault", (PyCFunction)(void (*)(void))fm_setdefault,
     METH_VARARGS | METH_KEYWORDS, "Not allowed: a FrozenMap is frozen."},
    {"clear", (PyCFunction)(void (*)(void))fm_clear,
     METH_VARARGS | METH_KEYWORDS, "Not allowed: a FrozenMap is frozen."},
    {"copy", fm_copy, METH_NOARGS, "Return a mutable copy as a plain dict."},
    {"__reduce__", fm_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL}
};

static PyMappingMethods fm_as_mapping = {
    .mp_ass_subscript = fm_ass_subscript,
};

static PyNumberMethods fm_as_number = {
    .nb_inplace_or = fm_inplace_or,
};

PyTypeObject PPY_FrozenMap_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyparallel.FrozenMap",
    .tp_basicsize = sizeof(PyDictObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR(
        "FrozenMap(mapping=(), /, **kwargs)\n--\n\n"
        "A frozen dict: immutable, immortal and shared by every worker\n"
        "interpreter without copies.  It is a dict subclass, so json.dumps,\n"
        "== and the Mapping ABC work on it; every mutation raises TypeError.\n"
        "Built by pyparallel.freeze() from a dict."),
    .tp_repr = fm_repr,
    .tp_as_mapping = &fm_as_mapping,
    .tp_as_number = &fm_as_number,
    .tp_methods = fm_methods,
    .tp_init = fm_init,
    .tp_new = fm_new,
};

static int main_ready;

int
ppy_frozenmap_ready(void)
{
    PyTypeObject *t = &PPY_FrozenMap_Type;

    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        if (!main_ready) {
            PyErr_SetString(PyExc_ImportError,
                            "pyparallel must be imported by the main "
                            "interpreter before any sub-interpreter imports it");
            return -1;
        }
        return ppy_static_type_init_interp(t);
    }
    if (main_ready)
        return 0;
    t->tp_base = &PyDict_Type;
    t->tp_traverse = PyDict_Type.tp_traverse;
    t->tp_clear = PyDict_Type.tp_clear;
    if (ppy_static_type_ready(t) < 0)
        return -1;
    main_ready = 1;
    return 0;
}

PyObject *
ppy_frozenmap_from_dict(PyObject *src)
{
    PyObject *empty = PyTuple_New(0), *fm;

    if (empty == NULL)
        return NULL;
    /* dict's own tp_new sets up the empty table; merging into an empty
     * dict clones src's compact table in one allocation. */
    fm = PyDict_Type.tp_new(&PPY_FrozenMap_Type, empty, NULL);
    Py_DECREF(empty);
    if (fm == NULL)
        return NULL;
    if (PyDict_Merge(fm, src, 1) < 0) {
        Py_DECREF(fm);
        return NULL;
    }
    return fm;
}
