/* ppy_refcount.h -- the object header: immortality and the frozen mark,
 * the one place that knows how each CPython version lays it out.
 *
 * A frozen object is immortal (PEP 683) with one more mark in the parts of
 * the 64-bit reference-count word that CPython leaves alone once an object
 * is immortal, so that "frozen by pyparallel" is one comparison:
 *
 *   3.12, 3.13  ob_refcnt is 64 bits; an immortal object holds 0xFFFFFFFF
 *               and CPython only reads and writes the low 32 bits
 *               (Py_INCREF saturates there, Py_DECREF and _Py_IsImmortal
 *               test them).  The mark is the high 32 bits: "PPLL".
 *   3.14, 3.15  the word is { uint32 ob_refcnt; uint16 ob_overflow; uint16
 *               ob_flags }.  An object is immortal when ob_flags has
 *               _Py_IMMORTAL_FLAGS (which the 3.14 eval loop trusts) and
 *               ob_refcnt is at least 3 << 30 (Py_INCREF does nothing there,
 *               Py_DECREF nothing below zero as an int32).  ob_overflow only
 *               carries counts of mortal objects past 32 bits; the mark is
 *               there: "PP".  Other ob_flags bits are kept as they are.
 *
 *               The count is not exact, though.  The 3.14 eval loop keeps
 *               references on its stack and in frame locals as tagged
 *               pointers whose tag says whether the object was immortal
 *               when the reference was made; closing or duplicating an
 *               untagged one adjusts the count without looking
 *               (Py_DECREF_MORTAL).  An object frozen in place while main
 *               still holds such references -- a local variable naming it
 *               -- sees its count move a little after freeze().  So the
 *               frozen count is 7 << 29, halfway between 3 << 30 and 2**32:
 *               any drift a program can cause keeps it above 3 << 30, where
 *               no reader's Py_INCREF or Py_DECREF writes, and below the
 *               32-bit wrap; and the mark test looks at ob_overflow and the
 *               flag, not at the exact count.
 *
 * Telling frozen objects apart by the memory they live in would need every
 * frozen object copied into one region; freeze() freezes immutable leaves
 * and tuples of frozen items in place, which saves a copy of most data.
 */
#ifndef PPY_REFCOUNT_H
#define PPY_REFCOUNT_H

#include <Python.h>
#include <stdint.h>

#if PY_VERSION_HEX < 0x030C0000
#  error "pyparallel needs CPython 3.12 or newer (per-interpreter GIL, PEP 684)"
#endif
#if PY_VERSION_HEX >= 0x03100000
#  error "pyparallel knows the object header of CPython 3.12 to 3.15; this is newer"
#endif
#ifdef Py_GIL_DISABLED
#  error "pyparallel needs a CPython build with the GIL (not free-threaded): build with python3.X, not python3.Xt"
#endif
#if SIZEOF_VOID_P != 8
#  error "pyparallel needs a 64-bit build"
#endif

#if PY_VERSION_HEX < 0x030E0000

#define PPY_FROZEN_WORD ((Py_ssize_t)UINT64_C(0x50504C4CFFFFFFFF))

static inline void
ppy_set_immortal(PyObject *o)
{
    o->ob_refcnt = _Py_IMMORTAL_REFCNT;
}

static inline void
ppy_mark_frozen(PyObject *o)
{
    o->ob_refcnt = PPY_FROZEN_WORD;
}

/* Frozen by pyparallel (and so immortal): one comparison. */
static inline int
ppy_is_frozen(PyObject *o)
{
    return o->ob_refcnt == PPY_FROZEN_WORD;
}

#else  /* 3.14, 3.15 */

#define PPY_FROZEN_OVERFLOW 0x5050
#define PPY_FROZEN_COUNT (UINT32_C(7) << 29)

static inline void
ppy_set_immortal(PyObject *o)
{
    o->ob_refcnt = (uint32_t)_Py_IMMORTAL_INITIAL_REFCNT;
    o->ob_flags |= _Py_IMMORTAL_FLAGS;
}

static inline void
ppy_mark_frozen(PyObject *o)
{
    o->ob_refcnt = PPY_FROZEN_COUNT;
    o->ob_overflow = PPY_FROZEN_OVERFLOW;
    o->ob_flags |= _Py_IMMORTAL_FLAGS;
}

static inline int
ppy_is_frozen(PyObject *o)
{
    return o->ob_overflow == PPY_FROZEN_OVERFLOW &&
           (o->ob_flags & _Py_IMMORTAL_FLAGS) &&
           o->ob_refcnt >= (uint32_t)_Py_IMMORTAL_INITIAL_REFCNT;
}

#endif


/* Immortal in CPython's sense (PEP 683), ours or CPython's own. */
static inline int
ppy_is_immortal(PyObject *o)
{
    return _Py_IsImmortal(o);
}

#endif /* PPY_REFCOUNT_H */
