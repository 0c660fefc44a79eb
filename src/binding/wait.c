/* wait.c -- blocking waits in the binding that let Ctrl-C through.
 *
 * Every wait on another thread releases the GIL and sleeps on a pp_word in
 * slices, running signal handlers between them, so that Ctrl-C reaches a
 * main thread blocked in pyparallel.
 */
#include "ppy_binding.h"
#include "pp_sync.h"

/* Waits give Ctrl-C a chance this often. */
#define SIGNAL_SLICE_NS 50000000L

/* Waits on a word while it holds expected, with the GIL released, in slices
 * that let signal handlers run.  timeout_ns < 0: no limit.  Returns the
 * value seen, or -1 with an exception set (KeyboardInterrupt). */
int64_t
ppy_wait_word(pp_word *w, uint32_t expected, long spin_ns, long timeout_ns)
{
    uint64_t start = pp_now_ns();
    uint32_t seen = expected;

    for (;;) {
        long slice = SIGNAL_SLICE_NS;

        if (timeout_ns >= 0) {
            uint64_t spent = pp_now_ns() - start;
            if (spent >= (uint64_t)timeout_ns)
                return seen;
            if ((uint64_t)timeout_ns - spent < (uint64_t)slice)
                slice = (long)((uint64_t)timeout_ns - spent);
        }
        Py_BEGIN_ALLOW_THREADS
        seen = pp_word_wait(w, expected, spin_ns, slice);
        Py_END_ALLOW_THREADS
        spin_ns = 0;
        if (seen != expected)
            return seen;
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
}
