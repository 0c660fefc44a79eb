/* ppy_caches.h -- the hash caches that differ by CPython version.
 *
 * freeze() fills every cache a reader could fill lazily before frozen data
 * is published (freeze.c: str hashes, UTF-8 and interned state, bytes and
 * frozenset hashes, on every version).  These are the ones only some
 * versions have:
 *
 *   3.14+  a tuple caches its hash (ob_hash, -1 until computed);
 *   3.15   a frozendict -- and so a FrozenMap there -- caches its hash too.
 *
 * A tuple built straight in a safety-mode arena has zeroed memory, which
 * would read as a cached hash of 0: ppy_tuple_reset_hash() first.
 */
#ifndef PPY_CACHES_H
#define PPY_CACHES_H

#include <Python.h>

static inline void
ppy_tuple_reset_hash(PyObject *t)
{
#if PY_VERSION_HEX >= 0x030E0000
    ((PyTupleObject *)t)->ob_hash = -1;
#else
    (void)t;
#endif
}

/* Fills o's own hash cache, where its type has one on this version.  An
 * unhashable o (a tuple holding a FrozenMap before 3.15) caches nothing
 * and never will, so nothing is written later either. */
static inline void
ppy_fill_hash_cache(PyObject *o)
{
#if PY_VERSION_HEX >= 0x030E0000
    int cached = PyTuple_CheckExact(o);
#  if PY_VERSION_HEX >= 0x030F0000
    cached = cached || PyFrozenDict_Check(o);
#  endif
    if (cached && PyObject_Hash(o) == -1)
        PyErr_Clear();
#else
    (void)o;
#endif
}

#endif /* PPY_CACHES_H */
