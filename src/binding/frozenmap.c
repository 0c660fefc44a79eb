/* frozenmap.c -- FrozenMap: the frozen form of a dict.
 *
 * A FrozenMap is built on the mapping type CPython's own C code reads
 * directly -- json.dumps, ==, the Mapping ABC, every fast path that takes
 * one:
 *
 *   3.12-3.14  a dict subclass;
 *   3.15       a frozendict subclass (PEP 814): what a 3.15 user expects a
 *              frozen dict to be; hashable, and never writable through
 *              dict's C API.
 *
 * Its storage is filled once by freeze() and never changes afterwards.
 * Every mutating entry point raises the same TypeError on every version.
 *
 * The type is static and shared by all interpreters of the process, since
 * its instances are.  Its mutable state -- __dict__ and the descriptors in
 * it, subclass list, weakref list -- is kept per interpreter, the way
 * CPython keeps dict's own (static_type.c); it cannot be subclassed, and
 * being a static type it is immutable.
 */
#include "ppy_binding.h"

#if PY_VERSION_HEX >= 0x030F0000
#  define MAP_BASE PyFrozenDict_Type
#else
#  define MAP_BASE PyDict_Type
#endif

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
/* A new plain dict with self's items. */
static PyObject *
plain_copy(PyObject *self)
{
    PyObject *d = PyDict_New();

    if (d != NULL && PyDict_Update(d, self) < 0)
        Py_CLEAR(d);
    return d;
}

static PyObject *
fm_copy(PyObject *self, PyObject *unused)
{
    (void)unused;
    return plain_copy(self);
}

static PyObject *
fm_reduce(PyObject *self, PyObject *unused)
{
    PyObject *plain = plain_copy(self), *res;

    (void)unused;
    if (plain == NULL)
        return NULL;
    res = Py_BuildValue("(O(N))", (PyObject *)Py_TYPE(self), plain);
    return res;
}

static PyObject *
fm_repr(PyObject *self)
{
#if PY_VERSION_HEX >= 0x030F0000
    return MAP_BASE.tp_repr(self);       /* "FrozenMap({...})" already */
#else
    PyObject *inner = MAP_BASE.tp_repr(self), *res;

    if (inner == NULL)
        return NULL;
    res = PyUnicode_FromFormat("FrozenMap(%U)", inner);
    Py_DECREF(inner);
    return res;
#endif
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
    .tp_basicsize = sizeof(PyDictObject),     /* set from the base when readied */
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR(
        "FrozenMap(mapping=(), /, **kwargs)\n--\n\n"
        "A frozen dict: immutable, immortal and shared by every worker\n"
        "interpreter without copies.  It is a dict subclass (a frozendict\n"
        "subclass on Python 3.15), so json.dumps, == and the Mapping ABC\n"
        "work on it; every mutation raises TypeError.\n"
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
    t->tp_base = &MAP_BASE;
    t->tp_basicsize = MAP_BASE.tp_basicsize;
    t->tp_traverse = MAP_BASE.tp_traverse;
    t->tp_clear = MAP_BASE.tp_clear;
    if (ppy_static_type_ready(t) < 0)
        return -1;
    main_ready = 1;
    return 0;
}

PyObject *
ppy_frozenmap_from_dict(PyObject *src)
{
#if PY_VERSION_HEX >= 0x030F0000
    /* frozendict's own tp_new builds the table from src, for a subtype. */
    PyObject *args = PyTuple_Pack(1, src), *fm;

    if (args == NULL)
        return NULL;
    fm = MAP_BASE.tp_new(&PPY_FrozenMap_Type, args, NULL);
    Py_DECREF(args);
    return fm;
#else
    PyObject *empty = PyTuple_New(0), *fm;

    if (empty == NULL)
        return NULL;
    /* dict's own tp_new sets up the empty table; merging into an empty
     * dict clones src's compact table in one allocation. */
    fm = MAP_BASE.tp_new(&PPY_FrozenMap_Type, empty, NULL);
    Py_DECREF(empty);
    if (fm == NULL)
        return NULL;
    if (PyDict_Merge(fm, src, 1) < 0) {
        Py_DECREF(fm);
        return NULL;
    }
    return fm;
#endif
}
