/* freeze.c -- pyparallel.freeze(): deep, immutable, immortal copies.
 *
 * freeze() walks a graph of builtin values in the main interpreter and
 * returns a copy that every worker interpreter can read by pointer:
 *
 *   1. containers become their immutable forms (list -> tuple, dict ->
 *      FrozenMap, set -> frozenset, bytearray/memoryview -> bytes);
 *   2. every cache a reader could fill lazily is filled now: str and bytes
 *      hashes, the UTF-8 form of non-ASCII str, frozenset hashes, and every
 *      str's interned state (short ones in the interned table, long ones
 *      marked only), so that a worker's intern, setattr or getattr finds
 *      them already interned and writes nothing;
 *   3. containers are untracked from the GC, so no collector of any
 *      interpreter ever writes their GC header;
 *   4. the header is written last: immortal, plus pyparallel's frozen mark
 *      (see ppy_refcount.h).
 *
 * Immutable leaves (int, float, complex, str, bytes) are frozen in place
 * rather than copied.  CPython's statically allocated objects (None, small
 * ints, static strings, the empty tuple) are already shared by every
 * interpreter and are used as they are; any other object, even one CPython
 * made immortal (an interned name), gets its caches filled and the mark.
 *
 * Safety-proof mode builds each frozen graph inside a fresh arena carved
 * from one reserved region and then write-protects the arena: any later
 * write into frozen memory, by CPython or by us, faults at once.  It works
 * by wrapping the object and mem allocators with hooks that, on the
 * freezing thread and only inside the short spans marked by
 * ppy_safety_arena_on/off, serve from the arena.  Leaves are copied into the
 * arena in that mode.  Frozen memory is never freed.
 */
#include "ppy_binding.h"
#include "ppy_caches.h"
#include "pp_arena.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Exported by libpython 3.12 and 3.13 but no longer declared by their
 * headers: interns a str and makes it immortal. */
PyAPI_FUNC(void) PyUnicode_InternImmortal(PyObject **p);

/* Short str are the ones used as names (attribute, keyword, intern()):
 * intern those; long text is left alone to keep the interned table small. */
#define PPY_INTERN_MAX_LEN 64

/* ---- safety-proof mode ------------------------------------------------ */

static int safety_on;
static pp_region frozen_region;
static _Thread_local pp_arena *current_arena;  /* this thread's freeze */
static _Thread_local int arena_active;
static PyMemAllocatorEx orig_mem, orig_obj;

static void *
hook_malloc(void *ctx, size_t n)
{
    PyMemAllocatorEx *orig = ctx;

    if (arena_active)
        return pp_arena_alloc(current_arena, n ? n : 1);
    return orig->malloc(orig->ctx, n);
}

static void *
hook_calloc(void *ctx, size_t nelem, size_t elsize)
{
    PyMemAllocatorEx *orig = ctx;
    size_t n;
    void *p;

    if (arena_active) {
        if (__builtin_mul_overflow(nelem, elsize, &n))
            return NULL;
        p = pp_arena_alloc(current_arena, n ? n : 1);
        if (p)
            memset(p, 0, n);
        return p;
    }
    return orig->calloc(orig->ctx, nelem, elsize);
}

static void *
hook_realloc(void *ctx, void *ptr, size_t n)
{
    PyMemAllocatorEx *orig = ctx;
    size_t old;
    void *np;

    if (ptr != NULL && pp_region_contains(&frozen_region, ptr)) {
        /* Frozen blocks never grow in place: copy to wherever new memory
         * comes from right now. */
        old = pp_arena_block_size(ptr);
        np = arena_active ? pp_arena_alloc(current_arena, n ? n : 1)
                          : orig->malloc(orig->ctx, n);
        if (np)
            memcpy(np, ptr, old < n ? old : n);
        return np;
    }
    if (ptr == NULL && arena_active)
        return pp_arena_alloc(current_arena, n ? n : 1);
    return orig->realloc(orig->ctx, ptr, n);
}

static void
hook_free(void *ctx, void *ptr)
{
    PyMemAllocatorEx *orig = ctx;

    if (ptr != NULL && pp_region_contains(&frozen_region, ptr))
        return;                          /* frozen memory lives forever */
    orig->free(orig->ctx, ptr);
}

int
ppy_safety_enabled(void)
{
    return safety_on;
}

int
ppy_safety_enable(void)
{
    PyMemAllocatorEx hook;
    int rc;

    if (safety_on)
        return 0;
    /* 64 GiB of address space; only what freezes use is ever backed. */
    if ((rc = pp_region_reserve(&frozen_region, (size_t)1 << 36)) < 0) {
        errno = -rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &orig_mem);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &orig_obj);
    hook.malloc = hook_malloc;
    hook.calloc = hook_calloc;
    hook.realloc = hook_realloc;
    hook.free = hook_free;
    hook.ctx = &orig_mem;
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &hook);
    hook.ctx = &orig_obj;
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &hook);
    safety_on = 1;
    return 0;
}

void
ppy_safety_arena_on(void)
{
    if (current_arena)
        arena_active = 1;
}

void
ppy_safety_arena_off(void)
{
    arena_active = 0;
}

/* ---- the walk --------------------------------------------------------- */

typedef struct {
    ppy_state *st;
    PyObject *memo;        /* {id(container): frozen copy, or None while open} */
    ppy_path path;
    int safety;
    int local;             /* in a worker: an immutable private copy */
} freeze_ctx;

static PyObject *freeze_value(freeze_ctx *c, PyObject *o, int depth);

/* The last step of freezing any object we made or own: its own hash cache
 * where it has one (tuples on 3.14+, maps on 3.15), untracked, and the
 * header. */
static void
mark_frozen(PyObject *o)
{
    ppy_safety_arena_on();
    ppy_fill_hash_cache(o);
    ppy_safety_arena_off();
    if (PyObject_IS_GC(o) && PyObject_GC_IsTracked(o))
        PyObject_GC_UnTrack(o);
    ppy_mark_frozen(o);
}

/* Sets FreezeError for an object freeze does not accept. */
static PyObject *
reject(freeze_ctx *c, PyObject *o, const char *hint)
{
    PyObject *cls = ppy_exc(c->st->FreezeError, PyExc_TypeError);
    PyTypeObject *t = Py_TYPE(o);
    PyObject *mod = PyObject_GetAttrString((PyObject *)t, "__module__");
    PyObject *qn = PyType_GetQualName(t);

    if (mod && qn && PyUnicode_Check(mod) &&
        PyUnicode_CompareWithASCIIString(mod, "builtins") != 0)
        PyErr_Format(cls, "cannot freeze an instance of %U.%U%s", mod, qn,
                     hint);
    else if (qn)
        PyErr_Format(cls, "cannot freeze an instance of %U%s", qn, hint);
    Py_XDECREF(mod);
    Py_XDECREF(qn);
    if (!PyErr_Occurred())
        PyErr_SetString(cls, "cannot freeze this object");
    return NULL;
}

/* Copies a leaf into the arena (safety mode), else returns it. */
static PyObject *
copy_leaf(freeze_ctx *c, PyObject *o)
{
    PyObject *copy = NULL;
    PyTypeObject *t = Py_TYPE(o);

    if (!c->safety || ppy_is_cpython_static(o))
        return Py_NewRef(o);
    ppy_safety_arena_on();
    if (t == &PyLong_Type) {
        PyObject *zero = PyLong_FromLong(0);       /* static small int */
        copy = zero ? PyNumber_Add(o, zero) : NULL;
        Py_XDECREF(zero);
    } else if (t == &PyFloat_Type) {
        PyFloatObject *f = PyObject_New(PyFloatObject, &PyFloat_Type);
        if (f)
            f->ob_fval = PyFloat_AS_DOUBLE(o);
        copy = (PyObject *)f;
    } else if (t == &PyComplex_Type) {
        PyComplexObject *z = PyObject_New(PyComplexObject, &PyComplex_Type);
        if (z)
            z->cval = ((PyComplexObject *)o)->cval;
        copy = (PyObject *)z;
    } else if (t == &PyUnicode_Type) {
        copy = PyUnicode_FromKindAndData(PyUnicode_KIND(o),
                                         PyUnicode_DATA(o),
                                         PyUnicode_GET_LENGTH(o));
    } else if (t == &PyBytes_Type) {
        copy = PyBytes_FromStringAndSize(PyBytes_AS_STRING(o),
                                         PyBytes_GET_SIZE(o));
    } else {
        copy = Py_NewRef(o);
    }
    ppy_safety_arena_off();
    return copy;
}

/* Fills every cache a reader of str v could fill lazily: its hash, its
 * UTF-8 form, and its interned state (setattr(), getattr() and keyword
 * names intern a str implicitly, writing that state into it).  Returns the
 * str to keep -- interning may hand back an equal one interned before --
 * or NULL with an exception set; v is stolen. */
static PyObject *
fill_str(PyObject *v)
{
    if (PyObject_Hash(v) == -1) {
        Py_DECREF(v);
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(v)) {
        ppy_safety_arena_on();
        /* A str with lone surrogates has no UTF-8 form and never gets one,
         * so nothing can be written later either. */
        if (PyUnicode_AsUTF8AndSize(v, NULL) == NULL)
            PyErr_Clear();
        ppy_safety_arena_off();
    }
    if (PyUnicode_CHECK_INTERNED(v) || PyUnicode_GET_LENGTH(v) <= PPY_INTERN_MAX_LEN) {
        /* Names go in the interned table (equal names in code are then
         * the same object); one interned already is made immortal there. */
        PyUnicode_InternImmortal(&v);
    } else {
        /* Long text stays out of the table, which would grow by one entry
         * per frozen str, but is marked interned all the same, so that
         * interning it finds it done and writes nothing.  Only names are
         * compared as "interned, so equal only if identical", and no name
         * CPython uses is this long. */
        ((PyASCIIObject *)v)->state.interned = SSTATE_INTERNED_IMMORTAL;
    }
    return v;
}

/* Freezes an exact int, float, complex, str or bytes.  o is borrowed.
 *
 * Whoever made o immortal -- nobody, CPython (an interned name, a code
 * object's constant) or another library -- its lazy caches are filled and
 * it is marked frozen here, since workers will read it; in safety mode it
 * is copied into the arena first, like any leaf, so that a write into it
 * faults.  Only CPython's statically allocated objects, which every
 * interpreter shares already, are used as they are. */
static PyObject *
freeze_leaf(freeze_ctx *c, PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    PyObject *v;

    if (c->local)
        return Py_NewRef(o);             /* a worker's private copy */
    if ((v = copy_leaf(c, o)) == NULL)
        return NULL;
    if (t == &PyUnicode_Type && (v = fill_str(v)) == NULL)
        return NULL;
    if (t == &PyBytes_Type && PyObject_Hash(v) == -1) {
        Py_DECREF(v);
        return NULL;
    }
    if (!ppy_is_cpython_static(v))
        mark_frozen(v);
    return v;
}

/* A new tuple of n items taken from src (a sequence's item array). */
static PyObject *
freeze_items(freeze_ctx *c, PyObject *o, PyObject *const *items, Py_ssize_t n,
             int depth)
{
    PyObject *tmp, *res, *fi;
    Py_ssize_t i;

    /* Freeze children into a temporary tuple in ordinary memory first:
     * freezing them may call back into Python. */
    if ((tmp = PyTuple_New(n)) == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        PyObject *item = Py_NewRef(items[i]);
        fi = freeze_value(c, item, depth + 1);
        Py_DECREF(item);
        if (fi == NULL) {
            PyObject *idx = PyLong_FromSsize_t(i);
            if (idx) {
                ppy_path_push(&c->path, '[', idx);
                Py_DECREF(idx);
            }
            Py_DECREF(tmp);
            return NULL;
        }
        PyTuple_SET_ITEM(tmp, i, fi);
    }
    /* A tuple whose items all froze to themselves is already immutable:
     * freeze it in place instead of holding a second copy (outside safety
     * mode, where frozen memory must come from the arena). */
    if (!c->safety && !c->local && Py_TYPE(o) == &PyTuple_Type) {
        for (i = 0; i < n && PyTuple_GET_ITEM(tmp, i) == items[i]; i++)
            ;
        if (i == n) {
            Py_DECREF(tmp);
            return Py_NewRef(o);
        }
    }
    if (!c->safety || n == 0)
        return tmp;
    /* In safety mode the tuple itself must live in the arena; the tuple
     * free list would hand back ordinary memory, so allocate directly. */
    ppy_safety_arena_on();
    res = (PyObject *)PyObject_GC_NewVar(PyTupleObject, &PyTuple_Type, n);
    ppy_safety_arena_off();
    if (res == NULL) {
        Py_DECREF(tmp);
        return NULL;
    }
    ppy_tuple_reset_hash(res);
    for (i = 0; i < n; i++)
        PyTuple_SET_ITEM(res, i, Py_NewRef(PyTuple_GET_ITEM(tmp, i)));
    Py_DECREF(tmp);
    return res;
}

static PyObject *
freeze_dict(freeze_ctx *c, PyObject *o, int depth)
{
    PyObject *tmp, *key, *value, *fk = NULL, *fv = NULL, *res;
    Py_ssize_t pos = 0;

    tmp = _PyDict_NewPresized(PyDict_GET_SIZE(o));
    if (tmp == NULL)
        return NULL;
    while (PyDict_Next(o, &pos, &key, &value)) {
        Py_INCREF(key);
        Py_INCREF(value);
        fk = freeze_value(c, key, depth + 1);
        fv = fk ? freeze_value(c, value, depth + 1) : NULL;
        if (fv == NULL || PyDict_SetItem(tmp, fk, fv) < 0) {
            ppy_path_push(&c->path, '[', key);
            Py_DECREF(key);
            Py_DECREF(value);
            Py_XDECREF(fk);
            Py_XDECREF(fv);
            Py_DECREF(tmp);
            return NULL;
        }
        Py_DECREF(key);
        Py_DECREF(value);
        Py_DECREF(fk);
        Py_DECREF(fv);
    }
    ppy_safety_arena_on();
    res = ppy_frozenmap_from_dict(tmp);
    ppy_safety_arena_off();
    Py_DECREF(tmp);
    return res;
}

static PyObject *
freeze_set(freeze_ctx *c, PyObject *o, int depth)
{
    PyObject *items = PySequence_List(o), *res, *fi;
    Py_ssize_t i, n;

    if (items == NULL)
        return NULL;
    n = PyList_GET_SIZE(items);
    /* Freeze the members first (ordinary memory), then build the set. */
    for (i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        fi = freeze_value(c, item, depth + 1);
        if (fi == NULL) {
            ppy_path_push(&c->path, '{', item);
            Py_DECREF(items);
            return NULL;
        }
        PyList_SET_ITEM(items, i, fi);
        Py_DECREF(item);
    }
    ppy_safety_arena_on();
    res = PyFrozenSet_New(NULL);
    for (i = 0; res && i < n; i++) {
        if (PySet_Add(res, PyList_GET_ITEM(items, i)) < 0)
            Py_CLEAR(res);
    }
    /* frozenset caches its hash on first use: compute it now. */
    if (res && PyObject_Hash(res) == -1)
        Py_CLEAR(res);
    ppy_safety_arena_off();
    Py_DECREF(items);
    return res;
}

/* Freezes a container with memoisation (shared sub-graphs stay shared)
 * and cycle detection. */
static PyObject *
freeze_container(freeze_ctx *c, PyObject *o, int depth)
{
    PyTypeObject *t = Py_TYPE(o);
    PyObject *id, *seen, *res = NULL;

    if (depth > PPY_MAX_DEPTH) {
        PyErr_Format(ppy_exc(c->st->FreezeError, PyExc_TypeError),
                     "nested more than %d levels deep", PPY_MAX_DEPTH);
        return NULL;
    }
    if (t == &PyTuple_Type) {
        /* No memo for tuples: a cycle must pass through a mutable container
         * (memoised below), and a tuple of frozen items is frozen in place,
         * so sharing survives anyway.  A memo entry per tuple would cost
         * more than the data in a table of a million small tuples. */
        res = freeze_items(c, o, &PyTuple_GET_ITEM(o, 0), PyTuple_GET_SIZE(o),
                           depth);
        if (res != NULL && !c->local && !ppy_is_frozen(res) &&
            !ppy_is_cpython_static(res))
            mark_frozen(res);
        return res;
    }
    if ((id = PyLong_FromVoidPtr(o)) == NULL)
        return NULL;
    seen = PyDict_GetItemWithError(c->memo, id);
    if (seen == Py_None) {
        PyErr_SetString(ppy_exc(c->st->FreezeError, PyExc_TypeError),
                        "contains a reference cycle: frozen data must be "
                        "a tree (or a DAG) of values");
        goto done;
    }
    if (seen != NULL) {
        res = Py_NewRef(seen);
        goto done;
    }
    if (PyErr_Occurred() || PyDict_SetItem(c->memo, id, Py_None) < 0)
        goto done;

    if (t == &PyList_Type) {
        /* Snapshot the list so that a child's freeze cannot resize it. */
        PyObject *snap = PyList_AsTuple(o);
        if (snap) {
            res = freeze_items(c, o, &PyTuple_GET_ITEM(snap, 0),
                               PyTuple_GET_SIZE(snap), depth);
            Py_DECREF(snap);
        }
    } else if (ppy_is_plain_map_type(t))
        res = freeze_dict(c, o, depth);
    else
        res = freeze_set(c, o, depth);

    if (res != NULL) {
        if (!c->local && !ppy_is_frozen(res) && !ppy_is_cpython_static(res))
            mark_frozen(res);
        if (PyDict_SetItem(c->memo, id, res) < 0)
            Py_CLEAR(res);
    }
done:
    Py_DECREF(id);
    return res;
}

static PyObject *
freeze_value(freeze_ctx *c, PyObject *o, int depth)
{
    PyTypeObject *t = Py_TYPE(o);

    /* A FrozenMap is frozen whoever made it: in main every one is marked;
     * in a worker it may be one the worker froze itself (private, like
     * everything a worker freezes), and is immutable all the same. */
    if (ppy_is_frozen(o) || o == Py_None || t == &PyBool_Type ||
        t == &PPY_FrozenMap_Type)
        return Py_NewRef(o);
    if (t == &PyLong_Type || t == &PyFloat_Type || t == &PyComplex_Type ||
        t == &PyUnicode_Type || t == &PyBytes_Type)
        return freeze_leaf(c, o);
    if (t == &PyTuple_Type || t == &PyList_Type || ppy_is_plain_map_type(t) ||
        t == &PySet_Type || t == &PyFrozenSet_Type)
        return freeze_container(c, o, depth);
    if (t == &PyByteArray_Type || t == &PyMemoryView_Type) {
        PyObject *b = PyBytes_FromObject(o), *res;
        if (b == NULL)
            return NULL;
        res = freeze_leaf(c, b);
        Py_DECREF(b);
        return res;
    }
    if (PyLong_Check(o) || PyFloat_Check(o) || PyUnicode_Check(o) ||
        PyBytes_Check(o) || PyTuple_Check(o) || PyList_Check(o) ||
        PyDict_Check(o) || PyAnySet_Check(o))
        return reject(c, o, " (freeze accepts exact builtin types only: "
                            "convert it first, e.g. with dict(), tuple() "
                            "or str())");
    return reject(c, o, " (freeze accepts None, bool, int, float, complex, "
                        "str, bytes, bytearray, memoryview, tuple, list, "
                        "dict" PPY_FROZENDICT_NAME ", set and frozenset)");
}

/* The arenas of every safety-mode freeze: frozen memory is never freed. */
static pp_arena **arenas;
static size_t n_arenas;

void
ppy_safety_unprotect_all(void)
{
    size_t i;

    for (i = 0; i < n_arenas; i++) {
        /* mprotect() of our own mappings fails only without memory for
         * the page tables; finalisation would then fault on a frozen
         * interned str, so say why first. */
        if (pp_arena_protect(arenas[i], 0) < 0)
            fprintf(stderr, "pyparallel: could not make frozen memory "
                    "writable again for interpreter exit: %s\n",
                    strerror(errno));
    }
}

PyObject *
ppy_freeze(ppy_state *st, PyObject *obj)
{
    freeze_ctx c = {st, NULL, {NULL}, safety_on, 0};
    PyObject *res;
    pp_arena *arena = NULL;
    int gc_was_enabled = 0;

    /* Only the main interpreter's frozen data is shared.  In a worker (a
     * module it imports may freeze at top level) the result is an immutable
     * copy private to that worker. */
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        c.local = 1;
        c.safety = 0;
    }
    if (ppy_is_frozen(obj))
        return Py_NewRef(obj);
    if (ppy_frozenmap_ready() < 0)
        return NULL;
    if ((c.memo = PyDict_New()) == NULL)
        return NULL;
    if (c.safety) {
        pp_arena **grown = PyMem_RawRealloc(arenas,
                                            (n_arenas + 1) * sizeof *arenas);
        if (grown == NULL || (arena = PyMem_RawMalloc(sizeof *arena)) == NULL) {
            if (grown)
                arenas = grown;
            Py_DECREF(c.memo);
            return PyErr_NoMemory();
        }
        arenas = grown;
        arenas[n_arenas++] = arena;
        pp_arena_init(arena, 256 * 1024, &frozen_region);
        current_arena = arena;
        /* A collection could run finalizers while the arena is active. */
        gc_was_enabled = PyGC_Disable();
    }
    res = freeze_value(&c, obj, 0);
    if (c.safety) {
        current_arena = NULL;
        if (gc_was_enabled)
            PyGC_Enable();
        /* On failure the arena stays writable: objects in it may still be
         * referenced (by the exception, say). */
        if (res != NULL && pp_arena_protect(arena, 1) < 0) {
            Py_CLEAR(res);
            PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    Py_DECREF(c.memo);
    if (res == NULL)
        ppy_path_reraise(&c.path, "data", ppy_exc(st->FreezeError, PyExc_TypeError));
    ppy_path_clear(&c.path);
    return res;
}
