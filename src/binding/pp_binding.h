/* pp_binding.h -- declarations shared by the CPython binding layer.
 *
 * The binding turns the engine core (src/engine, no Python.h) into the
 * _pyparallel extension module: freeze(), the FrozenMap type, the value
 * codec that carries arguments and results between interpreters, and the
 * pool of own-GIL worker interpreters.  Every function here runs with the
 * calling interpreter's GIL held unless its comment says otherwise.
 */
#ifndef PP_BINDING_H
#define PP_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "pp_buf.h"

#if PY_VERSION_HEX < 0x030C0000
#  error "pyparallel needs CPython 3.12 or newer (per-interpreter GIL, PEP 684)"
#endif
#if PY_VERSION_HEX >= 0x030E0000
#  error "pyparallel supports CPython 3.12 and 3.13; 3.14 changed the object header"
#endif
#ifdef Py_GIL_DISABLED
#  error "pyparallel needs a CPython build with the GIL (not free-threaded)"
#endif
#if SIZEOF_VOID_P != 8
#  error "pyparallel needs a 64-bit build"
#endif

/* ---- frozen objects ---------------------------------------------------
 *
 * A frozen object is immortal (PEP 683) with one more mark: on 3.12/3.13
 * the 64-bit ob_refcnt of an immortal object is 0x00000000FFFFFFFF and
 * CPython only ever reads and writes its low 32 bits (Py_INCREF saturates
 * there, Py_DECREF and _Py_IsImmortal test them).  freeze() writes the
 * high 32 bits as "PPLL", so "frozen by pyparallel" is one comparison and
 * survives everything CPython does to an immortal object.
 */
#define PP_FROZEN_REFCNT ((Py_ssize_t)0x50504C4CFFFFFFFFLL)

static inline int
pp_is_frozen(PyObject *o)
{
    return o->ob_refcnt == PP_FROZEN_REFCNT;
}

/* Immortal in CPython's sense (PEP 683), ours or CPython's own. */
static inline int
pp_is_immortal(PyObject *o)
{
    return (int32_t)o->ob_refcnt < 0;
}

/* ---- module state (one per interpreter) ------------------------------ */

struct pp_worker;

typedef struct pp_state {
    PyTypeObject *pool_type;
    PyTypeObject *task_type;
    PyTypeObject *transport_type;
    PyTypeObject *server_type;
    PyTypeObject *timer_type;
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
    struct pp_worker *worker;    /* the worker this interpreter runs, or NULL */
    int worker_id;               /* -1 in the main interpreter */
} pp_state;

pp_state *pp_state_of(PyObject *module);

/* The exception class to raise, falling back to fallback when _init() has
 * not run (a bare `import _pyparallel`).  Borrowed reference. */
static inline PyObject *
pp_exc(PyObject *cls, PyObject *fallback)
{
    return cls ? cls : fallback;
}

/* ---- paths inside a value, for error messages -------------------------
 *
 * A failing recursive walk (freeze, encode) records where it was, innermost
 * step first, and the top renders "data['users'][3]". */
typedef struct pp_path {
    PyObject *steps;             /* list of (kind, key) tuples, or NULL */
} pp_path;

/* Records one step on the way out of a failed walk: kind '[' for an index
 * or a mapping key, '{' for a set member.  Best effort: never fails. */
void pp_path_push(pp_path *p, char kind, PyObject *key);
/* Renders root + steps, e.g. "data['users'][3]".  New reference. */
PyObject *pp_path_render(pp_path *p, const char *root);
void pp_path_clear(pp_path *p);
/* If the pending exception is a cls, raises it again as cls with the
 * message prefixed by where it happened: "data['users'][3]: ...". */
void pp_path_reraise(pp_path *p, const char *root, PyObject *cls);

/* Deepest nesting a walk accepts before it reports a cycle or an overly
 * deep value, well inside the C stack. */
#define PP_MAX_DEPTH 1000

/* ---- freeze (freeze.c) ------------------------------------------------ */

/* Returns a frozen deep copy of obj, or obj itself when already frozen.
 * Main interpreter only.  New reference, or NULL with FreezeError set. */
PyObject *pp_freeze(pp_state *st, PyObject *obj);

/* Turns the safety-proof mode on: every freeze from now on builds inside a
 * write-protected arena.  Must run before any worker interpreter exists.
 * Returns 0, or -1 with an exception set. */
int pp_safety_enable(void);
int pp_safety_enabled(void);

/* Makes every frozen arena writable again: at exit, after the workers are
 * gone, since interpreter finalisation rewrites interned strings' state. */
void pp_safety_unprotect_all(void);

/* Arena allocation for the current thread: while on, the object and mem
 * allocators of this thread serve from the current freeze's arena. */
void pp_safety_arena_on(void);
void pp_safety_arena_off(void);

/* ---- FrozenMap (frozenmap.c) ------------------------------------------ */

extern PyTypeObject PP_FrozenMap_Type;

/* Readies the static type and makes it and everything reachable from its
 * dict immortal, so that every interpreter may use it.  Main interpreter,
 * once per process; later calls return 0 at once. */
int pp_frozenmap_ready(void);

/* A new FrozenMap holding src's items; src is an exact dict built by
 * freeze() (never resized by deletion).  New reference. */
PyObject *pp_frozenmap_from_dict(PyObject *src);

/* ---- value codec (xcopy.c) -------------------------------------------
 *
 * Values cross between interpreters as bytes in a pp_buf: builtin values
 * are encoded in C, frozen objects by address, anything else by pickle.
 * The bytes belong to no interpreter, so either side may free them. */

/* Appends obj's encoding to out.  Returns 0, or -1 with TransferError set
 * (message names the place inside obj, rooted at root). */
int pp_encode(pp_state *st, PyObject *obj, pp_buf *out, const char *root);

/* Encodes a call's positional arguments (a tuple) and keyword arguments
 * (a dict, or NULL/None), naming "argument 1 of f()" in errors.  Decodes as
 * two values: a tuple, then a dict or None. */
int pp_encode_call(pp_state *st, PyObject *fn, PyObject *args,
                   PyObject *kwargs, pp_buf *out);

/* Decodes one value.  New reference, or NULL with an exception set. */
PyObject *pp_decode(pp_state *st, pp_reader *r);

/* ---- pool (pool.c) ---------------------------------------------------- */

extern PyType_Spec pp_pool_spec;
extern PyType_Spec pp_task_spec;

/* Pools created so far in this process (safety mode must come first). */
extern int pp_pools_created;

/* Module-level helpers implemented in pool.c. */
PyObject *pp_call_from_main(PyObject *module, PyObject *const *args,
                            Py_ssize_t nargs, PyObject *kwnames, int wait);

#endif /* PP_BINDING_H */
