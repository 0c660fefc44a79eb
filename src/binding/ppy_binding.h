/* ppy_binding.h -- declarations shared by the CPython binding layer.
 *
 * The binding turns the engine core (src/engine, no Python.h) into the
 * _pyparallel extension module: freeze(), the FrozenMap type, the value
 * codec that carries arguments and results between interpreters, and the
 * pool of own-GIL worker interpreters.  Every function here runs with the
 * calling interpreter's GIL held unless its comment says otherwise.
 */
#ifndef PPY_BINDING_H
#define PPY_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "pp_buf.h"
#include "pp_sync.h"
#include "pp_queue.h"

#include "ppy_refcount.h"    /* ppy_is_frozen, ppy_mark_frozen, immortality */

/* CPython's statically allocated objects, shared by every interpreter of
 * the process already: None, True, False, Ellipsis, NotImplemented, the
 * small ints, static strings (identifiers, one-character latin-1 str, ''),
 * b'' and the one-byte bytes, the empty tuple.  freeze() uses them as they
 * are, and is_frozen() is true for them. */
static inline int
ppy_is_cpython_static(PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);

    if (!ppy_is_immortal(o))
        return 0;
#if PY_VERSION_HEX >= 0x030E0000
    (void)t;
    return _Py_IsStaticImmortal(o);   /* 3.14+ flags them in the header */
#else
    if (o == Py_None || t == &PyBool_Type || o == Py_Ellipsis ||
        o == Py_NotImplemented)
        return 1;
    if (t == &PyUnicode_Type)
        return ((PyASCIIObject *)o)->state.statically_allocated;
    if (t == &PyLong_Type) {
        int overflow;
        long v = PyLong_AsLongAndOverflow(o, &overflow);
        return !overflow && v >= -5 && v <= 256;   /* CPython's small ints */
    }
    if (t == &PyBytes_Type)
        return PyBytes_GET_SIZE(o) <= 1;
    if (t == &PyTuple_Type)
        return PyTuple_GET_SIZE(o) == 0;
    return 0;
#endif
}

/* Safe to read from every interpreter by pointer: frozen by the main
 * interpreter's freeze(), or one of CPython's statically allocated
 * objects.  What pyparallel.is_frozen() answers. */
static inline int
ppy_is_shareable(PyObject *o)
{
    return ppy_is_frozen(o) || ppy_is_cpython_static(o);
}


/* ---- module state (one per interpreter) ------------------------------ */

struct ppy_worker;

typedef struct ppy_state {
    PyTypeObject *pool_type;
    PyTypeObject *task_type;
    PyTypeObject *transport_type;
    PyTypeObject *server_type;
    PyTypeObject *timer_type;
    PyTypeObject *response_type; /* pyparallel.http.Response (response.c) */
    /* Exception classes, handed over by pyparallel/_errors.py via _init(). */
    PyObject *FreezeError;
    PyObject *TransferError;
    PyObject *WorkerError;
    PyObject *WorkerImportError;
    PyObject *WorkerInitError;
    PyObject *errors_module;     /* pyparallel._errors */
    PyObject *pickle_dumps;      /* loaded on first use */
    PyObject *pickle_loads;
    PyObject *pickle_protocol;   /* int: pickle.HIGHEST_PROTOCOL */
    PyObject *builtin_eval;      /* builtins.eval and exec, before the */
    PyObject *builtin_exec;      /* guards (globals.c) replaced them */
    struct ppy_worker *worker;    /* the worker this interpreter runs, or NULL */
    int worker_id;               /* -1 in the main interpreter */
} ppy_state;

ppy_state *ppy_state_of(PyObject *module);

/* The exception class to raise, falling back to fallback when _init() has
 * not run (a bare `import _pyparallel`).  Borrowed reference. */
static inline PyObject *
ppy_exc(PyObject *cls, PyObject *fallback)
{
    return cls ? cls : fallback;
}

/* ---- paths inside a value, for error messages -------------------------
 *
 * A failing recursive walk (freeze, encode) records where it was, innermost
 * step first, and the top renders "data['users'][3]". */
typedef struct ppy_path {
    PyObject *steps;             /* list of (kind, key) tuples, or NULL */
} ppy_path;

/* Records one step on the way out of a failed walk: kind '[' for an index
 * or a mapping key, '{' for a set member.  Best effort: never fails. */
void ppy_path_push(ppy_path *p, char kind, PyObject *key);
/* Renders root + steps, e.g. "data['users'][3]".  New reference. */
PyObject *ppy_path_render(ppy_path *p, const char *root);
void ppy_path_clear(ppy_path *p);
/* If the pending exception is a cls, raises it again as cls with the
 * message prefixed by where it happened: "data['users'][3]: ...". */
void ppy_path_reraise(ppy_path *p, const char *root, PyObject *cls);

/* Deepest nesting a walk accepts before it reports a cycle or an overly
 * deep value, well inside the C stack. */
#define PPY_MAX_DEPTH 1000

/* ---- freeze (freeze.c) ------------------------------------------------ */

/* Returns a frozen deep copy of obj, or obj itself when already frozen.
 * Main interpreter only.  New reference, or NULL with FreezeError set. */
PyObject *ppy_freeze(ppy_state *st, PyObject *obj);

/* Turns the safety-proof mode on: every freeze from now on builds inside a
 * write-protected arena.  Must run before any worker interpreter exists.
 * Returns 0, or -1 with an exception set. */
int ppy_safety_enable(void);
int ppy_safety_enabled(void);

/* Makes every frozen arena writable again: at exit, after the workers are
 * gone, since interpreter finalisation rewrites interned strings' state. */
void ppy_safety_unprotect_all(void);

/* Arena allocation for the current thread: while on, the object and mem
 * allocators of this thread serve from the current freeze's arena. */
void ppy_safety_arena_on(void);
void ppy_safety_arena_off(void);

/* ---- the wiki index (wiki.c) ------------------------------------------ */

extern PyType_Spec ppy_wiki_builder_spec;
extern PyMethodDef ppy_wiki_methods[];

/* ---- static types shared by every interpreter (static_type.c) -------- */

/* Readies t, a static type whose instances every interpreter shares, so
 * that its __dict__, subclass list and weakref list are kept per
 * interpreter, as for CPython's own static types.  Main interpreter, once,
 * before any other interpreter uses t.  Returns 0, or -1 with an exception
 * set. */
int ppy_static_type_ready(PyTypeObject *t);
/* Gives the current (sub-)interpreter its state for t; later calls in the
 * same interpreter return 0 at once. */
int ppy_static_type_init_interp(PyTypeObject *t);
/* Drops the current interpreter's state for t just before it ends (the
 * worker calls it before Py_EndInterpreter; on 3.13+ CPython does it). */
void ppy_static_type_fini_interp(PyTypeObject *t);

/* ---- frozen maps as globals (globals.c) -------------------------------- */

/* Replaces builtins.eval and builtins.exec of the current interpreter with
 * guards that refuse a FrozenMap as globals (CPython writes __builtins__
 * and global assignments straight into a globals dict).  Returns 0, or -1
 * with an exception set. */
int ppy_install_globals_guard(PyObject *module);

/* ---- FrozenMap (frozenmap.c) ------------------------------------------ */

/* The mappings freeze() turns into a FrozenMap: dict, and frozendict on
 * 3.15 (its values may be mutable: it is frozen only one level deep). */
#if PY_VERSION_HEX >= 0x030F0000
#  define PPY_FROZENDICT_NAME ", frozendict"
static inline int
ppy_is_plain_map_type(PyTypeObject *t)
{
    return t == &PyDict_Type || t == &PyFrozenDict_Type;
}
#else
#  define PPY_FROZENDICT_NAME ""
static inline int
ppy_is_plain_map_type(PyTypeObject *t)
{
    return t == &PyDict_Type;
}
#endif

extern PyTypeObject PPY_FrozenMap_Type;

/* Readies the type (static_type.c) in the main interpreter, once per
 * process, and in each other interpreter, once; later calls return 0. */
int ppy_frozenmap_ready(void);

/* A new FrozenMap holding src's items; src is an exact dict built by
 * freeze() (never resized by deletion).  New reference. */
PyObject *ppy_frozenmap_from_dict(PyObject *src);

/* ---- value codec (xcopy.c) -------------------------------------------
 *
 * Values cross between interpreters as bytes in a pp_buf: builtin values
 * are encoded in C, frozen objects by address, anything else by pickle.
 * The bytes belong to no interpreter, so either side may free them. */

/* Appends obj's encoding to out.  Returns 0, or -1 with TransferError set
 * (message names the place inside obj, rooted at root). */
int ppy_encode(ppy_state *st, PyObject *obj, pp_buf *out, const char *root);

/* Encodes a call's positional arguments (a tuple) and keyword arguments
 * (a dict, or NULL/None), naming "argument 1 of f()" in errors.  Decodes as
 * two values: a tuple, then a dict or None. */
int ppy_encode_call(ppy_state *st, PyObject *fn, PyObject *args,
                   PyObject *kwargs, pp_buf *out);

/* Decodes one value.  New reference, or NULL with an exception set. */
PyObject *ppy_decode(ppy_state *st, pp_reader *r);

/* ---- exceptions (exc.c) and waits (wait.c) --------------------------- */

/* The pending exception as traceback text (malloc'd, never NULL); clears
 * it. */
char *ppy_exception_text(void);

/* Encodes exc packed by pack (pyparallel._errors.pack_exception of the
 * current interpreter) into out, replacing its contents; when that fails,
 * a packed exception of class fallback_type with exc's text (or
 * fallback_msg) instead.  Never fails; leaves no exception set. */
void ppy_pack_exception(ppy_state *st, PyObject *pack, PyObject *exc,
                        pp_buf *out, const char *fallback_type,
                        const char *fallback_msg);

/* Hands the pending exception (cleared here) to the main thread, which
 * raises it at its next bytecode or pyparallel wait, as if a signal handler
 * had raised it.  For SystemExit and KeyboardInterrupt raised on
 * pyparallel's own main-interpreter threads.  Main GIL held. */
void ppy_raise_in_main(void);
/* exc is a SystemExit or a KeyboardInterrupt. */
int ppy_is_exit_exception(PyObject *exc);

/* Calls pyparallel._errors.rebuild(*packed) in the current interpreter:
 * the exception a packed one stands for.  New reference, or NULL. */
PyObject *ppy_rebuild_exception(ppy_state *st, PyObject *packed);

/* Waits while *w == expected, with the GIL released, spinning spin_ns
 * first, in slices that let signal handlers run.  timeout_ns < 0: no
 * limit.  Returns the value seen (expected on timeout), or -1 with the
 * signal handler's exception set. */
int64_t ppy_wait_word(pp_word *w, uint32_t expected, long spin_ns,
                      long timeout_ns);

/* What is left of a timeout_ns (< 0: none) counted from start (a
 * pp_now_ns() reading): -1 for no limit, 0 once it has passed, else the
 * nanoseconds left. */
static inline int64_t
ppy_time_left(uint64_t start, int64_t timeout_ns)
{
    uint64_t spent;

    if (timeout_ns < 0)
        return -1;
    spent = pp_now_ns() - start;
    return spent >= (uint64_t)timeout_ns ? 0 : timeout_ns - (int64_t)spent;
}

/* The same, calling check(arg) before each slice: it returns 0 to go on
 * waiting, or -1 with an exception set to give up (a deadlock found). */
typedef int (*ppy_wait_check)(void *arg);
int64_t ppy_wait_word_checked(pp_word *w, uint32_t expected, long spin_ns,
                              long timeout_ns, ppy_wait_check check, void *arg);

/* A thread that serves a queue (the completion thread, the main-call
 * thread) goes on serving it while it waits: between the slices of its
 * waits, run() handles the rest of its current batch and anything queued
 * since, one item at a time, in order.  run() is called with the GIL held
 * and one node (next == NULL). */
typedef struct ppy_pump {
    pp_queue *queue;
    pp_qnode *chain;             /* the batch being worked through */
    void (*run)(void *ctx, pp_qnode *node);
    void *ctx;
    int depth;                   /* nested waits running items */
} ppy_pump;

/* Makes p the calling thread's pump. */
void ppy_pump_set(ppy_pump *p);
/* Takes the next batch from the queue (blocking), and runs it holding ts's
 * GIL.  Returns 0 once the queue is closed and drained, else 1. */
int ppy_pump_serve(ppy_pump *p, PyThreadState *ts);
/* Runs the rest of the current batch (GIL held). */
void ppy_pump_drain(ppy_pump *p);
/* Turns a timeout or delay in seconds from Python into nanoseconds, the
 * one place that does (wait.c).  An int or float (or anything with
 * __float__ / __index__), or None when PPY_TIMEOUT_NONE allows it, which
 * means "for ever", as do inf and finite values past 2**63 - 1 ns (about
 * 292 years).  "For ever" is *out = -1, or with PPY_TIMEOUT_CLAMP
 * INT64_MAX: "not before then", for a deadline.  A positive value below a
 * nanosecond is rounded up to 1 ns, never down to 0.  Returns 0, or -1
 * with ValueError for nan and negative values ("timeout must be a
 * non-negative number of seconds or None, not nan") or TypeError for a
 * non-number, naming `name`. */
#define PPY_TIMEOUT_NONE 1
#define PPY_TIMEOUT_CLAMP 2
int ppy_timeout_ns(PyObject *obj, const char *name, int flags, int64_t *out);

/* ---- pool (pool.c and the files beside it) ---------------------------- */

extern PyType_Spec ppy_pool_spec;
extern PyType_Spec ppy_task_spec;
extern PyType_Spec ppy_response_spec;
/* Gives the Response type its vectorcall (after PyType_FromModuleAndSpec). */
void ppy_response_ready(PyTypeObject *tp);

/* Pools created so far in this process (safety mode must come first). */
extern int ppy_pools_created;

/* call_from_main_thread[_and_wait]() (maincall.c). */
PyObject *ppy_call_from_main(PyObject *module, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames, int wait,
                             int internal);

#endif /* PPY_BINDING_H */
