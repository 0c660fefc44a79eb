/* static_type.c -- a static type shared by every interpreter, with the
 * type's mutable state kept per interpreter.
 *
 * Frozen objects are shared by pointer, so their type is shared too: every
 * interpreter sees the same PyTypeObject.  A type is not only read,
 * though.  Taking a weak reference to it (every ABC check does:
 * isinstance(m, collections.abc.Mapping) caches the class in a WeakSet)
 * links the new weakref into the type's weakref list; subclassing adds to
 * its subclass list; its __dict__ holds descriptors whose caches fill on
 * use and which can be weakly referenced themselves.  Done by several
 * interpreters at once, each under its own GIL, that corrupts the type (a
 * crash within a second with two workers doing ABC checks), and a weakref
 * owned by a worker that has ended dangles in the list.
 *
 * CPython solves this for its own static types (dict, tuple...): the type's
 * __dict__, subclasses and weakrefs live in a per-interpreter array, found
 * through an index stored in tp_subclasses, with _Py_TPFLAGS_STATIC_BUILTIN
 * marking the type.  The types made here get the same treatment:
 *
 *   3.13+  CPython exports _PyStaticType_InitForExtension for exactly this
 *          (the _datetime module uses it for its static types): each
 *          interpreter calls it once; CPython builds that interpreter's
 *          __dict__ with its own descriptors and finalises the state when
 *          the interpreter ends.
 *   3.12   the same mechanism exists for CPython's own types only, so this
 *          file does what _PyStaticType_InitBuiltin does: it claims a free
 *          slot of the per-interpreter static-type array (the last one,
 *          never used by CPython) and fills it in each interpreter with a
 *          __dict__ of that interpreter's own descriptors.  The slot layout
 *          comes from CPython's internal header and is checked at run time
 *          against dict's own slot before anything is written.
 *
 * What remains shared is read-only: the PyTypeObject's slots, its MRO and
 * bases (immortal tuples of static types), and its version tag, taken from
 * the range CPython reserves for static types so that no interpreter's
 * type cache confuses it with one of its own heap types.
 */
#include <patchlevel.h>
#if PY_VERSION_HEX < 0x030D0000
/* For the per-interpreter static-type array of 3.12 (struct types_state):
 * this file alone compiles as a core module, as CPython's own shared
 * extensions do. */
#  define Py_BUILD_CORE_MODULE 1
#endif
#include "ppy_binding.h"

#if PY_VERSION_HEX < 0x030D0000
#  include "internal/pycore_interp.h"
#else
/* Exported by CPython 3.13+ "for the _datetime shared extension"; declared
 * in an internal header. */
PyAPI_FUNC(int) _PyStaticType_InitForExtension(PyInterpreterState *interp,
                                               PyTypeObject *self);
#endif

/* The key under which an interpreter's dict (PyInterpreterState_GetDict)
 * records that a type's state exists there. */
static PyObject *
ready_key(PyTypeObject *t)
{
    return PyUnicode_FromFormat("pyparallel.static_type:%s", t->tp_name);
}

/* 1 if t's state was set up in this interpreter, 0 if not, -1 on error;
 * with mark, records that it now is. */
static int
interp_has_state(PyTypeObject *t, int mark)
{
    PyObject *d = PyInterpreterState_GetDict(PyInterpreterState_Get());
    PyObject *key = ready_key(t);
    int r;

    if (d == NULL || key == NULL) {
        Py_XDECREF(key);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError,
                            "pyparallel: no per-interpreter dict");
        return -1;
    }
    r = mark ? PyDict_SetItem(d, key, Py_True) : PyDict_Contains(d, key);
    Py_DECREF(key);
    return mark ? (r < 0 ? -1 : 1) : r;
}

/* Makes a runtime object immortal: the MRO and bases tuples every
 * interpreter reads through the type. */
static void
immortalize(PyObject *o)
{
    if (o == NULL || ppy_is_immortal(o))
        return;
    if (PyObject_IS_GC(o) && PyObject_GC_IsTracked(o))
        PyObject_GC_UnTrack(o);
    ppy_set_immortal(o);
}

#if PY_VERSION_HEX < 0x030D0000

/* The last slot: CPython 3.12 fills slots from 0 up, one per builtin
 * static type (about 100 of the 200). */
#define SLOT (_Py_MAX_STATIC_BUILTIN_TYPES - 1)

/* This interpreter's slot for t, after checking that the array is where
 * and what the header says: dict's own slot must hold dict. */
static static_builtin_state *
slot_of(PyTypeObject *t)
{
    struct types_state *ts = &PyInterpreterState_Get()->types;
    size_t dict_index = (size_t)PyDict_Type.tp_subclasses - 1;

    if (!(PyDict_Type.tp_flags & _Py_TPFLAGS_STATIC_BUILTIN) ||
        dict_index >= _Py_MAX_STATIC_BUILTIN_TYPES ||
        ts->builtins[dict_index].type != &PyDict_Type ||
        ts->num_builtins_initialized >= SLOT) {
        PyErr_Format(PyExc_ImportError,
                     "pyparallel cannot give %s per-interpreter state on this "
                     "CPython %s build: its static-type table is not laid "
                     "out as CPython 3.12's headers describe (please report "
                     "this, with `python -VV`)", t->tp_name, PY_VERSION);
        return NULL;
    }
    return &ts->builtins[SLOT];
}

/* A copy of one entry of main's type dict for this interpreter: fresh
 * descriptors over the same C definitions, fresh strings; CPython's
 * process-wide singletons (None) as they are.  New reference. */
static PyObject *
copy_entry(PyTypeObject *t, PyObject *key, PyObject *v)
{
    PyTypeObject *vt = Py_TYPE(v);

    if (vt == &PyMethodDescr_Type)
        return PyDescr_NewMethod(((PyDescrObject *)v)->d_type,
                                 ((PyMethodDescrObject *)v)->d_method);
    if (vt == &PyClassMethodDescr_Type)
        return PyDescr_NewClassMethod(((PyDescrObject *)v)->d_type,
                                      ((PyMethodDescrObject *)v)->d_method);
    if (vt == &PyWrapperDescr_Type)
        return PyDescr_NewWrapper(((PyDescrObject *)v)->d_type,
                                  ((PyWrapperDescrObject *)v)->d_base,
                                  ((PyWrapperDescrObject *)v)->d_wrapped);
    if (vt == &PyMemberDescr_Type)
        return PyDescr_NewMember(((PyDescrObject *)v)->d_type,
                                 ((PyMemberDescrObject *)v)->d_member);
    if (vt == &PyGetSetDescr_Type)
        return PyDescr_NewGetSet(((PyDescrObject *)v)->d_type,
                                 ((PyGetSetDescrObject *)v)->d_getset);
    if (vt == &PyCFunction_Type) {
        PyCFunctionObject *f = (PyCFunctionObject *)v;
        return PyCFunction_NewEx(f->m_ml, f->m_self, f->m_module);
    }
    if (vt == &PyUnicode_Type)
        return PyUnicode_FromKindAndData(PyUnicode_KIND(v), PyUnicode_DATA(v),
                                         PyUnicode_GET_LENGTH(v));
    if (v == Py_None)
        return Py_NewRef(v);
    PyErr_Format(PyExc_ImportError,
                 "pyparallel cannot give %s's attribute %R (a %s) to another "
                 "interpreter", t->tp_name, key, vt->tp_name);
    return NULL;
}

/* This interpreter's __dict__ for t, built from main's. */
static PyObject *
copy_type_dict(PyTypeObject *t)
{
    PyObject *d = PyDict_New(), *key, *value;
    Py_ssize_t pos = 0;

    while (d && PyDict_Next(t->tp_dict, &pos, &key, &value)) {
        PyObject *k = PyUnicode_FromKindAndData(PyUnicode_KIND(key),
                                                PyUnicode_DATA(key),
                                                PyUnicode_GET_LENGTH(key));
        PyObject *v = k ? copy_entry(t, key, value) : NULL;
        if (k)
            PyUnicode_InternInPlace(&k);
        if (v == NULL || PyDict_SetItem(d, k, v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    return d;
}

int
ppy_static_type_ready(PyTypeObject *t)
{
    static_builtin_state *state;

    /* Every interpreter references the type: its count must never move
     * (a static type from an extension starts mortal on 3.12). */
    ppy_set_immortal((PyObject *)t);
    if (PyType_Ready(t) < 0 || (state = slot_of(t)) == NULL)
        return -1;
    if (state->type != NULL || t->tp_subclasses != NULL) {
        PyErr_Format(PyExc_ImportError,
                     "pyparallel: %s was subclassed, or its slot taken, before "
                     "it could be given per-interpreter state", t->tp_name);
        return -1;
    }
    /* Static types take their version tag from CPython's process-wide
     * range (it checks IMMUTABLETYPE, which PyType_Ready set). */
    if (!PyUnstable_Type_AssignVersionTag(t)) {
        PyErr_Format(PyExc_ImportError,
                     "pyparallel: no type version tag left for %s", t->tp_name);
        return -1;
    }
    immortalize(t->tp_mro);
    immortalize(t->tp_bases);
    /* Main's state: the dict PyType_Ready made (t->tp_dict keeps it). */
    state->type = t;
    state->ready = 1;
    state->tp_dict = Py_NewRef(t->tp_dict);
    state->tp_subclasses = NULL;
    /* The weakrefs main has so far (PyType_Ready made one: dict's subclass
     * list refers to its subclasses weakly) move with the list head. */
    state->tp_weaklist = t->tp_weaklist;
    t->tp_weaklist = NULL;
    /* From here on CPython looks these up in the slot of the interpreter
     * at hand. */
    t->tp_subclasses = (void *)(uintptr_t)(SLOT + 1);
    t->tp_flags |= _Py_TPFLAGS_STATIC_BUILTIN;
    return interp_has_state(t, 1) < 0 ? -1 : 0;
}

int
ppy_static_type_init_interp(PyTypeObject *t)
{
    static_builtin_state *state;
    int r = interp_has_state(t, 0);

    if (r != 0)
        return r < 0 ? -1 : 0;
    if ((state = slot_of(t)) == NULL)
        return -1;
    if (state->type != NULL) {
        PyErr_Format(PyExc_ImportError,
                     "pyparallel: this interpreter's static-type slot %d is "
                     "taken by %s", SLOT, state->type->tp_name);
        return -1;
    }
    if ((state->tp_dict = copy_type_dict(t)) == NULL)
        return -1;
    state->tp_subclasses = NULL;
    state->tp_weaklist = NULL;
    state->ready = 1;
    state->type = t;
    return interp_has_state(t, 1) < 0 ? -1 : 0;
}

void
ppy_static_type_fini_interp(PyTypeObject *t)
{
    static_builtin_state *state = slot_of(t);

    if (state == NULL || state->type != t) {
        PyErr_Clear();
        return;
    }
    /* What CPython's _PyStaticType_Dealloc does for its own types: clear
     * the weakrefs this interpreter took (their callbacks run now, while
     * the interpreter still works).  The slot's dict stays: the ending
     * interpreter may still look attributes up while it finalises, and
     * the slot goes away with the interpreter. */
    PyObject_ClearWeakRefs((PyObject *)t);
    state->type = NULL;
}

#else  /* 3.13+ */

int
ppy_static_type_ready(PyTypeObject *t)
{
    /* Every interpreter references the type: its count must never move
     * (CPython requires a managed static type to be immortal). */
    ppy_set_immortal((PyObject *)t);
    /* Readies the type (not ready yet: this is the initial call), marks it
     * a managed static type and gives it a process-wide version tag. */
    if (_PyStaticType_InitForExtension(PyInterpreterState_Get(), t) < 0)
        return -1;
    immortalize(t->tp_mro);
    immortalize(t->tp_bases);
    return interp_has_state(t, 1) < 0 ? -1 : 0;
}

int
ppy_static_type_init_interp(PyTypeObject *t)
{
    int r = interp_has_state(t, 0);

    if (r != 0)
        return r < 0 ? -1 : 0;
    if (_PyStaticType_InitForExtension(PyInterpreterState_Get(), t) < 0)
        return -1;
    return interp_has_state(t, 1) < 0 ? -1 : 0;
}

void
ppy_static_type_fini_interp(PyTypeObject *t)
{
    (void)t;             /* CPython finalises it with the interpreter */
}

#endif
