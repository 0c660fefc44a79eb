/* wait.c -- blocking waits in the binding.
 *
 * Every wait on another thread releases the GIL and sleeps on a pp_word in
 * slices.  Between slices it runs what a blocked thread must not hold up:
 *
 *   - signal handlers (Ctrl-C reaches a main thread blocked in pyparallel),
 *     and pending calls: an exception raised in a main-thread call or a
 *     Future callback is delivered to the main thread that way (exc.c);
 *   - the waiter's own queue, when the waiter is a thread that serves one
 *     (the completion thread, the main-call thread: see ppy_pump): a
 *     function run by the main-call thread that waits on a worker lets the
 *     calls queued behind it run meanwhile, so that a worker waiting on
 *     one of those is not stuck behind it;
 *   - the caller's deadlock check, which raises when the wait could only
 *     end after something that waits on the waiter itself.
 *
 * ppy_timeout_ns() is the one place a timeout from Python becomes
 * nanoseconds.
 */
#include "ppy_binding.h"
#include "pp_queue.h"
#include "pp_sync.h"

#include <math.h>

/* Waits give Ctrl-C a chance this often... */
#define SIGNAL_SLICE_NS 50000000L
/* ...and a thread serving a queue looks at it this often. */
#define PUMP_SLICE_NS 1000000L

/* Items run by nested waits at most this deep (each level is an item
 * that is itself waiting). */
#define PUMP_MAX_DEPTH 32

static _Thread_local ppy_pump *current_pump;

void
ppy_pump_set(ppy_pump *pump)
{
    current_pump = pump;
}

void
ppy_pump_drain(ppy_pump *p)
{
    pp_qnode *node;

    p->depth++;
    while ((node = p->chain) != NULL) {
        p->chain = node->next;
        node->next = NULL;
        p->run(p->ctx, node);
    }
    p->depth--;
}

int
ppy_pump_serve(ppy_pump *p, PyThreadState *ts)
{
    if (p->chain == NULL)
        p->chain = pp_queue_pop_all(p->queue, 0);
    if (p->chain == NULL)
        return 0;                      /* closed and drained */
    PyEval_RestoreThread(ts);
    ppy_pump_drain(p);
    PyEval_SaveThread();
    return 1;
}

/* Runs what has queued up for the waiting thread meanwhile: the rest of
 * the batch it was working through, then anything new. */
static void
pump(void)
{
    ppy_pump *p = current_pump;

    if (p == NULL || p->depth >= PUMP_MAX_DEPTH)
        return;
    if (p->chain == NULL && pp_queue_len(p->queue) > 0)
        p->chain = pp_queue_take_all(p->queue);
    if (p->chain)
        ppy_pump_drain(p);
}

int64_t
ppy_wait_word_checked(pp_word *w, uint32_t expected, long spin_ns,
                      long timeout_ns, ppy_wait_check check, void *arg)
{
    uint64_t start = pp_now_ns();
    uint32_t seen = expected;

    for (;;) {
        long slice = current_pump ? PUMP_SLICE_NS : SIGNAL_SLICE_NS;
        int64_t left;

        if (check && check(arg) < 0)
            return -1;
        if ((left = ppy_time_left(start, timeout_ns)) == 0)
            return seen;
        if (left > 0 && left < slice)
            slice = (long)left;
        Py_BEGIN_ALLOW_THREADS
        seen = pp_word_wait(w, expected, spin_ns, slice);
        Py_END_ALLOW_THREADS
        spin_ns = 0;
        if (seen != expected)
            return seen;
        if (PyErr_CheckSignals() < 0 || Py_MakePendingCalls() < 0)
            return -1;
        pump();
    }
}

int64_t
ppy_wait_word(pp_word *w, uint32_t expected, long spin_ns, long timeout_ns)
{
    return ppy_wait_word_checked(w, expected, spin_ns, timeout_ns, NULL, NULL);
}

/* 2**63 as a double: the first value that does not fit an int64_t. */
#define TWO_POW_63 9223372036854775808.0
#define NS_PER_S 1000000000LL

int
ppy_timeout_ns(PyObject *obj, const char *name, int flags, int64_t *out)
{
    const char *none = (flags & PPY_TIMEOUT_NONE) ? " or None" : "";
    int64_t forever = (flags & PPY_TIMEOUT_CLAMP) ? INT64_MAX : -1;
    PyNumberMethods *nb = Py_TYPE(obj)->tp_as_number;
    double d;

    if (obj == Py_None && (flags & PPY_TIMEOUT_NONE)) {
        *out = forever;
        return 0;
    }
    if (PyLong_Check(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);

        if (v == -1 && PyErr_Occurred())
            return -1;
        if (overflow < 0 || (overflow == 0 && v < 0))
            goto negative;
        *out = (overflow > 0 || v > INT64_MAX / NS_PER_S) ? forever
                                                          : v * NS_PER_S;
        return 0;
    }
    if (!PyFloat_Check(obj) &&
        (nb == NULL || (nb->nb_float == NULL && nb->nb_index == NULL))) {
        PyErr_Format(PyExc_TypeError, "%s must be a number of seconds%s, not "
                     "%.100s", name, none, Py_TYPE(obj)->tp_name);
        return -1;
    }
    d = PyFloat_AsDouble(obj);
    if (d == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(d) || d < 0)
        goto negative;
    d = ceil(d * 1e9);           /* inf stays inf */
    *out = d >= TWO_POW_63 ? forever : (int64_t)d;
    return 0;
negative:
    PyErr_Format(PyExc_ValueError, "%s must be a non-negative number of "
                 "seconds%s, not %R", name, none, obj);
    return -1;
}
