/* globals.c -- a FrozenMap is never the globals of running code.
 *
 * eval() and exec() insert __builtins__ into the globals dict they are
 * given when it has none, and the code they run stores global assignments
 * (STORE_GLOBAL, DELETE_GLOBAL) into it -- all through the C API
 * (PyDict_SetItem), which no dict subclass can intercept.  Given a frozen
 * map, that writes into memory every worker reads, and leaves a pointer to
 * the calling interpreter's builtins there once it ends.  So pyparallel
 * replaces builtins.eval and builtins.exec, in every interpreter that
 * imports it, with guards that refuse a FrozenMap as globals, whether
 * passed or implied (the caller's own globals), and otherwise call the
 * originals unchanged.  A FrozenMap as *locals* is fine: names are stored
 * there through the mapping protocol, which FrozenMap refuses.
 */
#include "ppy_binding.h"

static PyObject *guard_eval(PyObject *, PyObject *const *, size_t, PyObject *);
static PyObject *guard_exec(PyObject *, PyObject *const *, size_t, PyObject *);

static PyMethodDef guard_eval_def = {
    "eval", (PyCFunction)(void (*)(void))guard_eval,
    METH_FASTCALL | METH_KEYWORDS,
    "eval($module, source, /, globals=None, locals=None)\n--\n\n"
    "Evaluate the given source in the context of globals and locals.\n\n"
    "builtins.eval, guarded by pyparallel: globals may not be a FrozenMap\n"
    "(frozen data is shared read-only; CPython writes into globals).",
};

static PyMethodDef guard_exec_def = {
    "exec", (PyCFunction)(void (*)(void))guard_exec,
    METH_FASTCALL | METH_KEYWORDS,
    "exec($module, source, /, globals=None, locals=None, *, closure=None)\n"
    "--\n\n"
    "Execute the given source in the context of globals and locals.\n\n"
    "builtins.exec, guarded by pyparallel: globals may not be a FrozenMap\n"
    "(frozen data is shared read-only; CPython writes into globals).",
};

/* The globals a call to eval/exec would run with: the argument, or the
 * caller's own when none is given.  Borrowed, may be NULL. */
static PyObject *
globals_of(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *g = nargs >= 2 ? args[1] : NULL;
    Py_ssize_t i, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;

    for (i = 0; g == NULL && i < nkw; i++) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i),
                                             "globals") == 0)
            g = args[nargs + i];
    }
    if (g == NULL || g == Py_None)
        g = PyEval_GetGlobals();
    return g;
}

static PyObject *
guarded(PyObject *orig, const char *name, PyObject *const *args,
        size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *g = globals_of(args, nargs, kwnames);

    if (g != NULL && Py_TYPE(g) == &PPY_FrozenMap_Type) {
        PyErr_Format(PyExc_TypeError,
                     "%s() cannot run code with a FrozenMap as its globals: "
                     "CPython writes __builtins__ and every global assignment "
                     "straight into the globals dict, and frozen data is "
                     "shared read-only.  Pass a mutable copy instead: "
                     "%s(source, dict(m))", name, name);
        return NULL;
    }
    if (orig == NULL) {
        PyErr_Format(PyExc_RuntimeError, "builtins.%s is gone", name);
        return NULL;
    }
    return PyObject_Vectorcall(orig, args, nargsf, kwnames);
}

static PyObject *
guard_eval(PyObject *module, PyObject *const *args, size_t nargsf,
           PyObject *kwnames)
{
    return guarded(ppy_state_of(module)->builtin_eval, "eval", args, nargsf,
                   kwnames);
}

static PyObject *
guard_exec(PyObject *module, PyObject *const *args, size_t nargsf,
           PyObject *kwnames)
{
    return guarded(ppy_state_of(module)->builtin_exec, "exec", args, nargsf,
                   kwnames);
}

/* Replaces builtins.<def->ml_name> with a guard bound to module, keeping
 * the original in *slot; an existing guard (pyparallel imported twice in
 * this interpreter) is kept, with its original. */
static int
install(PyObject *module, PyObject *builtins, PyMethodDef *def,
        PyObject **slot)
{
    PyObject *cur = PyObject_GetAttrString(builtins, def->ml_name), *name, *g;
    int rc;

    if (cur == NULL)
        return -1;
    if (PyCFunction_Check(cur) && ((PyCFunctionObject *)cur)->m_ml == def) {
        ppy_state *other = ppy_state_of(((PyCFunctionObject *)cur)->m_self);
        PyObject *orig = def == &guard_eval_def ? other->builtin_eval
                                                : other->builtin_exec;
        Py_XSETREF(*slot, Py_XNewRef(orig));
        Py_DECREF(cur);
        return 0;
    }
    Py_XSETREF(*slot, cur);
    if ((name = PyUnicode_FromString("builtins")) == NULL)
        return -1;
    g = PyCFunction_NewEx(def, module, name);
    Py_DECREF(name);
    if (g == NULL)
        return -1;
    rc = PyObject_SetAttrString(builtins, def->ml_name, g);
    Py_DECREF(g);
    return rc;
}

int
ppy_install_globals_guard(PyObject *module)
{
    ppy_state *st = ppy_state_of(module);
    PyObject *builtins = PyImport_ImportModule("builtins");
    int rc;

    if (builtins == NULL)
        return -1;
    rc = install(module, builtins, &guard_eval_def, &st->builtin_eval) < 0 ||
         install(module, builtins, &guard_exec_def, &st->builtin_exec) < 0
         ? -1 : 0;
    Py_DECREF(builtins);
    return rc;
}
