/* module.c -- the _pyparallel extension module: state, functions, wiring.
 *
 * Multi-phase initialisation with per-interpreter state, declared safe for
 * a per-interpreter GIL, so that every worker interpreter imports its own
 * copy.  Laid out like CPython's Modules/_queuemodule.c: state, functions,
 * GC hooks, then the method table, slots and module definition last.
 */
#include "ppy_binding.h"
#include "ppy_io.h"
#include "pp_thread.h"

ppy_state *
ppy_state_of(PyObject *module)
{
    ppy_state *st = PyModule_GetState(module);

    assert(st != NULL);
    return st;
}

/* ---- functions -------------------------------------------------------- */

PyDoc_STRVAR(freeze_doc,
"freeze(obj, /)\n--\n\n"
"Return a frozen deep copy of obj: deeply immutable and immortal, shared\n"
"with every worker interpreter by pointer.  list becomes tuple, dict becomes\n"
"FrozenMap, set becomes frozenset, bytearray and memoryview become bytes.\n"
"Raises FreezeError naming the place of anything else.");

static PyObject *
mod_freeze(PyObject *module, PyObject *obj)
{
    return ppy_freeze(ppy_state_of(module), obj);
}

/* Frozen by the main interpreter's freeze(), or one of CPython's
 * statically allocated objects, which freeze() returns as they are (None,
 * small ints, static strings, the empty tuple...).  Not any immortal
 * object: a worker's interned names are immortal and its own. */
static PyObject *
mod_is_frozen(PyObject *module, PyObject *obj)
{
    (void)module;
    return PyBool_FromLong(ppy_is_shareable(obj));
}

static PyObject *
mod_worker_id(PyObject *module, PyObject *unused)
{
    ppy_state *st = ppy_state_of(module);

    (void)unused;
    if (st->worker_id < 0)
        Py_RETURN_NONE;
    return PyLong_FromLong(st->worker_id);
}

static PyObject *
mod_is_parallel_context(PyObject *module, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(ppy_state_of(module)->worker_id >= 0);
}

static PyObject *
mod_is_main_interpreter(PyObject *module, PyObject *unused)
{
    (void)module; (void)unused;
    return PyBool_FromLong(PyInterpreterState_Get() == PyInterpreterState_Main());
}

static PyObject *
mod_cpu_count(PyObject *module, PyObject *unused)
{
    (void)module; (void)unused;
    return PyLong_FromLong(pp_cpu_count());
}

static PyObject *
mod_enable_safety(PyObject *module, PyObject *unused)
{
    (void)module; (void)unused;
    if (ppy_safety_enabled())
        Py_RETURN_NONE;
    if (ppy_pools_created > 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "safety-proof mode must be turned on before any worker "
                        "starts: set PYPARALLEL_SAFETY=1 in the environment, or "
                        "call pyparallel.configure(safety=True) first thing");
        return NULL;
    }
    if (ppy_safety_enable() < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
mod_safety_enabled(PyObject *module, PyObject *unused)
{
    (void)module; (void)unused;
    return PyBool_FromLong(ppy_safety_enabled());
}

static PyObject *
mod_exit_unprotect(PyObject *module, PyObject *unused)
{
    (void)module; (void)unused;
    ppy_safety_unprotect_all();
    Py_RETURN_NONE;
}

/* _init(errors_module): hands over the exception classes. */
static PyObject *
mod_init(PyObject *module, PyObject *errors)
{
    ppy_state *st = ppy_state_of(module);
    static const char *names[] = {"FreezeError", "TransferError", "WorkerError",
                                  "WorkerImportError", "WorkerInitError"};
    PyObject **slots[] = {&st->FreezeError, &st->TransferError, &st->WorkerError,
                          &st->WorkerImportError, &st->WorkerInitError};
    size_t i;

    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
        PyObject *cls = PyObject_GetAttrString(errors, names[i]);
        if (cls == NULL)
            return NULL;
        Py_XSETREF(*slots[i], cls);
    }
    Py_XSETREF(st->errors_module, Py_NewRef(errors));
    Py_RETURN_NONE;
}

static PyObject *
mod_call_from_main_thread(PyObject *module, PyObject *const *args,
                          Py_ssize_t nargs, PyObject *kwnames)
{
    return ppy_call_from_main(module, args, PyVectorcall_NARGS(nargs), kwnames, 0, 0);
}

static PyObject *
mod_call_from_main_thread_and_wait(PyObject *module, PyObject *const *args,
                                   Py_ssize_t nargs, PyObject *kwnames)
{
    return ppy_call_from_main(module, args, PyVectorcall_NARGS(nargs), kwnames, 1, 0);
}

/* pyparallel's own quick calls into main (see maincall.c). */
static PyObject *
mod_call_in_main_internal(PyObject *module, PyObject *const *args,
                          Py_ssize_t nargs, PyObject *kwnames)
{
    return ppy_call_from_main(module, args, PyVectorcall_NARGS(nargs), kwnames, 1, 1);
}

/* _lazy_state(s) -> dict: what of a str's lazily filled state is filled
 * (for tests: a frozen str must have nothing left for a reader to fill). */
static PyObject *
mod_lazy_state(PyObject *module, PyObject *s)
{
    PyASCIIObject *a = (PyASCIIObject *)s;

    (void)module;
    if (!PyUnicode_CheckExact(s)) {
        PyErr_SetString(PyExc_TypeError, "_lazy_state() takes a str");
        return NULL;
    }
    return Py_BuildValue("{sOsOsisOsO}",
        "hash", a->hash != -1 ? Py_True : Py_False,
        "utf8", a->state.ascii ? Py_None
                : ((PyCompactUnicodeObject *)s)->utf8 ? Py_True : Py_False,
        "interned", (int)a->state.interned,
        "immortal", ppy_is_immortal(s) ? Py_True : Py_False,
        "frozen", ppy_is_frozen(s) ? Py_True : Py_False);
}

/* _encode_roundtrip(obj) -> obj decoded in this interpreter (for tests). */
static PyObject *
mod_roundtrip(PyObject *module, PyObject *obj)
{
    ppy_state *st = ppy_state_of(module);
    pp_buf b = PP_BUF_INIT;
    pp_reader r;
    PyObject *res = NULL;

    if (ppy_encode(st, obj, &b, "value") == 0) {
        r.p = b.data;
        r.end = b.data + b.len;
        res = ppy_decode(st, &r);
    }
    pp_buf_free(&b);
    return res;
}

/* ---- run() / stop() ------------------------------------------------------
 *
 * One process-wide word: stop() sets it from any interpreter or thread,
 * _wait_stop() (run()'s core, main thread) waits for it and consumes it. */
static pp_word stop_word;

static PyObject *
mod_stop(PyObject *module, PyObject *unused)
{
    (void)module; (void)unused;
    pp_word_set(&stop_word, 1);
    Py_RETURN_NONE;
}

/* _wait_stop(timeout) -> bool: True when stop() was called (and is now
 * consumed), False on timeout (None: no limit).  Signal handlers run while
 * it waits. */
static PyObject *
mod_wait_stop(PyObject *module, PyObject *args)
{
    PyObject *timeout_obj;
    int64_t timeout_ns;
    uint64_t start = pp_now_ns();

    (void)module;
    if (!PyArg_ParseTuple(args, "O:_wait_stop", &timeout_obj) ||
        ppy_timeout_ns(timeout_obj, "timeout", PPY_TIMEOUT_NONE, &timeout_ns) < 0)
        return NULL;
    for (;;) {
        int64_t left;
        if (pp_word_cas(&stop_word, 1, 0))
            Py_RETURN_TRUE;
        if ((left = ppy_time_left(start, timeout_ns)) == 0)
            Py_RETURN_FALSE;
        if (ppy_wait_word(&stop_word, 0, 0, left) < 0)
            return NULL;
    }
}

static PyObject *
mod_connect(PyObject *module, PyObject *args, PyObject *kwargs)
{
    return ppy_client_connect(module, args, kwargs);
}

static PyMethodDef module_methods[] = {
    {"stop", mod_stop, METH_NOARGS,
     "stop()\n--\n\nMake the current or next pyparallel.run() return "
     "(any thread, any interpreter)."},
    {"_wait_stop", mod_wait_stop, METH_VARARGS, NULL},
    {"_connect", (PyCFunction)(void (*)(void))mod_connect,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"freeze", mod_freeze, METH_O, freeze_doc},
    {"is_frozen", mod_is_frozen, METH_O,
     "is_frozen(obj, /)\n--\n\nTrue if obj was frozen by pyparallel."},
    {"worker_id", mod_worker_id, METH_NOARGS,
     "worker_id()\n--\n\nThis worker's index in its pool; None in the main "
     "interpreter."},
    {"is_parallel_context", mod_is_parallel_context, METH_NOARGS,
     "is_parallel_context()\n--\n\nTrue inside a worker interpreter."},
    {"_is_main_interpreter", mod_is_main_interpreter, METH_NOARGS, NULL},
    {"cpu_count", mod_cpu_count, METH_NOARGS,
     "cpu_count()\n--\n\nCPUs this process may run on."},
    {"enable_safety", mod_enable_safety, METH_NOARGS,
     "enable_safety()\n--\n\nWrite-protect frozen memory from now on."},
    {"safety_enabled", mod_safety_enabled, METH_NOARGS, NULL},
    {"_init", mod_init, METH_O, NULL},
    {"_exit_unprotect", mod_exit_unprotect, METH_NOARGS, NULL},
    {"_roundtrip", mod_roundtrip, METH_O, NULL},
    {"_call_in_main", (PyCFunction)(void (*)(void))mod_call_in_main_internal,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {"_lazy_state", mod_lazy_state, METH_O, NULL},
    {"call_from_main_thread",
     (PyCFunction)(void (*)(void))mod_call_from_main_thread,
     METH_FASTCALL | METH_KEYWORDS,
     "call_from_main_thread(fn, /, *args, **kwargs)\n--\n\n"
     "From a worker: run fn(*args, **kwargs) in the main interpreter, without "
     "waiting.  In the main interpreter: call it now."},
    {"call_from_main_thread_and_wait",
     (PyCFunction)(void (*)(void))mod_call_from_main_thread_and_wait,
     METH_FASTCALL | METH_KEYWORDS,
     "call_from_main_thread_and_wait(fn, /, *args, **kwargs)\n--\n\n"
     "From a worker: run fn(*args, **kwargs) in the main interpreter and "
     "return its result (or raise its exception)."},
    {NULL, NULL, 0, NULL}
};

/* ---- module lifecycle ------------------------------------------------- */

static int
module_exec(PyObject *module)
{
    ppy_state *st = ppy_state_of(module);
    int is_main = PyInterpreterState_Get() == PyInterpreterState_Main();

    st->worker_id = -1;
    st->pool_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ppy_pool_spec, NULL);
    if (st->pool_type == NULL || PyModule_AddType(module, st->pool_type) < 0)
        return -1;
    st->task_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ppy_task_spec, NULL);
    if (st->task_type == NULL || PyModule_AddType(module, st->task_type) < 0)
        return -1;
    st->transport_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ppy_transport_spec, NULL);
    if (st->transport_type == NULL || PyModule_AddType(module, st->transport_type) < 0)
        return -1;
    st->server_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ppy_server_spec, NULL);
    if (st->server_type == NULL || PyModule_AddType(module, st->server_type) < 0)
        return -1;
    st->timer_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ppy_timer_spec, NULL);
    if (st->timer_type == NULL || PyModule_AddType(module, st->timer_type) < 0)
        return -1;
    st->response_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ppy_response_spec, NULL);
    if (st->response_type == NULL)
        return -1;
    ppy_response_ready(st->response_type);
    if (PyModule_AddType(module, st->response_type) < 0)
        return -1;
    {
        PyTypeObject *wb = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ppy_wiki_builder_spec, NULL);
        if (wb == NULL || PyModule_AddType(module, wb) < 0) {
            Py_XDECREF(wb);
            return -1;
        }
        Py_DECREF(wb);
    }
    if (PyModule_AddFunctions(module, ppy_wiki_methods) < 0)
        return -1;
    /* The shared FrozenMap type is readied by the main interpreter, then
     * given its per-interpreter state in each other interpreter. */
    if (!is_main && !(PPY_FrozenMap_Type.tp_flags & Py_TPFLAGS_READY)) {
        PyErr_SetString(PyExc_ImportError,
                        "pyparallel must be imported by the main interpreter "
                        "before any sub-interpreter imports it");
        return -1;
    }
    if (ppy_frozenmap_ready() < 0 || ppy_install_globals_guard(module) < 0)
        return -1;
    if (PyModule_AddObjectRef(module, "FrozenMap", (PyObject *)&PPY_FrozenMap_Type) < 0)
        return -1;
    return 0;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    ppy_state *st = PyModule_GetState(module);

    if (st == NULL)
        return 0;
    Py_VISIT(st->pool_type);
    Py_VISIT(st->task_type);
    Py_VISIT(st->transport_type);
    Py_VISIT(st->server_type);
    Py_VISIT(st->timer_type);
    Py_VISIT(st->response_type);
    Py_VISIT(st->FreezeError);
    Py_VISIT(st->TransferError);
    Py_VISIT(st->WorkerError);
    Py_VISIT(st->WorkerImportError);
    Py_VISIT(st->WorkerInitError);
    Py_VISIT(st->errors_module);
    Py_VISIT(st->pickle_dumps);
    Py_VISIT(st->pickle_loads);
    Py_VISIT(st->pickle_protocol);
    Py_VISIT(st->builtin_eval);
    Py_VISIT(st->builtin_exec);
    return 0;
}

static int
module_clear(PyObject *module)
{
    ppy_state *st = PyModule_GetState(module);

    if (st == NULL)
        return 0;
    Py_CLEAR(st->pool_type);
    Py_CLEAR(st->task_type);
    Py_CLEAR(st->transport_type);
    Py_CLEAR(st->server_type);
    Py_CLEAR(st->timer_type);
    Py_CLEAR(st->response_type);
    Py_CLEAR(st->FreezeError);
    Py_CLEAR(st->TransferError);
    Py_CLEAR(st->WorkerError);
    Py_CLEAR(st->WorkerImportError);
    Py_CLEAR(st->WorkerInitError);
    Py_CLEAR(st->errors_module);
    Py_CLEAR(st->pickle_dumps);
    Py_CLEAR(st->pickle_loads);
    Py_CLEAR(st->pickle_protocol);
    Py_CLEAR(st->builtin_eval);
    Py_CLEAR(st->builtin_exec);
    return 0;
}

static void
module_free(void *module)
{
    (void)module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    /* No Py_mod_gil slot: pyparallel runs only where there is a GIL (see
     * ppy_binding.h), and its thread safety rests on each interpreter's. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {0, NULL}
};

static struct PyModuleDef ppy_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyparallel._pyparallel",
    .m_doc = "The C runtime of pyparallel: freeze, FrozenMap, worker pools.",
    .m_size = sizeof(ppy_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__pyparallel(void)
{
    return PyModuleDef_Init(&ppy_module_def);
}
