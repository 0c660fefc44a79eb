/* lthread.c -- a worker's loop thread and the commands other threads send it.
 *
 * The life of a loop thread (see ppy_io.h for why it exists):
 *
 *   start     the main thread creates it once a server, client or timer
 *             first needs worker i; it makes a thread state in the
 *             worker's interpreter and takes that interpreter's GIL;
 *   run       pp_loop_run(): I/O, timers, and commands (drained by the
 *             async callback, at most a batch per wake-up);
 *   stop      the worker thread, when its pool shuts down, marks the queue
 *             stopped and stops the loop; the loop thread then closes every
 *             endpoint (connection_lost runs for each connection), cancels
 *             timers, runs the loop until the last connection is gone,
 *             deletes its thread state and ends;
 *   join      the worker thread joins it and only then ends the
 *             interpreter (Py_EndInterpreter wants to be its last thread).
 */
#include "ppy_io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

_Thread_local ppy_lthread *ppy_lthread_current;

/* ---- commands ----------------------------------------------------------- */

void
ppy_cmd_init(ppy_cmd *cmd, ppy_cmd_proc proc)
{
    cmd->next = NULL;
    cmd->proc = proc;
    cmd->free = NULL;
    atomic_init(&cmd->refs, 1);
    pp_word_init(&cmd->done, 0);
    cmd->rc = 0;
    cmd->error = NULL;
}

void
ppy_cmd_release(ppy_cmd *cmd)
{
    if (atomic_fetch_sub(&cmd->refs, 1) != 1)
        return;
    free(cmd->error);
    if (cmd->free)
        cmd->free(cmd);
    else
        free(cmd);
}

int
ppy_cmd_post(ppy_lthread *lt, ppy_cmd *cmd)
{
    int stopped;

    cmd->lt = lt;
    atomic_fetch_add(&cmd->refs, 1);
    pthread_mutex_lock(&lt->mu);
    stopped = lt->stopped;
    if (!stopped) {
        if (lt->tail)
            lt->tail->next = cmd;
        else
            lt->head = cmd;
        lt->tail = cmd;
        /* Under the lock: once `stopped` is set the loop (and its async
         * handle) may be torn down at any moment. */
        pp_async_send(&lt->async);
    }
    pthread_mutex_unlock(&lt->mu);
    if (stopped) {
        pp_word_set(&cmd->done, 1);
        ppy_cmd_release(cmd);
        return -1;
    }
    return 0;
}

int
ppy_cmd_call(ppy_lthread *lt, ppy_cmd *cmd)
{
    if (ppy_cmd_post(lt, cmd) < 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "pyparallel's workers have shut down (interpreter exit "
                        "or pyparallel.shutdown()); no more I/O can start");
        return -1;
    }
    return ppy_cmd_wait(cmd);
}

static int
check_loop(void *cmd)
{
    return ppy_check_wait_on_loop(((ppy_cmd *)cmd)->lt->worker);
}

int
ppy_cmd_wait_for(ppy_cmd *cmd, int64_t timeout_ns, const char *what)
{
    uint64_t start = pp_now_ns();

    while (pp_word_get(&cmd->done) == 0) {
        int64_t left = ppy_time_left(start, timeout_ns);
        if (left == 0) {
            PyErr_Format(PyExc_TimeoutError,
                         "%s timed out waiting for pyparallel worker %d's "
                         "I/O loop (a callback there has been running all "
                         "this time?)", what, cmd->lt->index);
            return -1;
        }
        if (ppy_wait_word_checked(&cmd->done, 0, 0, left, check_loop, cmd) < 0)
            return -1;
    }
    return 0;
}

int
ppy_cmd_wait(ppy_cmd *cmd)
{
    return ppy_cmd_wait_for(cmd, -1, "");
}

/* Runs one command on the loop thread and drops its reference. */
static void
run_cmd(ppy_lthread *lt, ppy_cmd *cmd)
{
    cmd->proc(lt, cmd);
    if (PyErr_Occurred())
        ppy_lthread_log_error(lt, "a pyparallel command", NULL);
    pp_word_set(&cmd->done, 1);
    ppy_cmd_release(cmd);
}

/* Commands per wake-up: the rest wait one loop iteration, so a flood of
 * commands cannot starve the connections. */
#define CMD_BATCH 64

static void
on_commands(pp_loop *loop, pp_async *async)
{
    ppy_lthread *lt = async->data;
    int n = 0, more;

    (void)loop;
    for (;;) {
        ppy_cmd *cmd;

        pthread_mutex_lock(&lt->mu);
        cmd = lt->head;
        if (cmd) {
            lt->head = cmd->next;
            if (lt->head == NULL)
                lt->tail = NULL;
        }
        more = lt->head != NULL;
        pthread_mutex_unlock(&lt->mu);
        if (cmd == NULL)
            return;
        cmd->next = NULL;
        run_cmd(lt, cmd);
        if (++n == CMD_BATCH && more) {
            pp_async_send(&lt->async);   /* the rest next iteration */
            return;
        }
    }
}

/* ---- logging ------------------------------------------------------------- */

void
ppy_io_report(int worker, const char *what, int rc)
{
    if (rc < 0)
        fprintf(stderr, "pyparallel: worker %d: %s (%s)\n", worker, what,
                strerror(-rc));
    else
        fprintf(stderr, "pyparallel: worker %d: %s\n", worker, what);
    fflush(stderr);
}

void
ppy_lthread_log_error(ppy_lthread *lt, const char *what, PyObject *about)
{
    PyObject *exc = PyErr_GetRaisedException(), *r = NULL;

    if (exc == NULL)
        return;
    if (lt->log_error)
        r = PyObject_CallFunction(lt->log_error, "sOO", what,
                                  about ? about : Py_None, exc);
    if (r == NULL) {
        /* The logger itself failed: fall back to stderr. */
        PyErr_Clear();
        PySys_WriteStderr("pyparallel: exception in %s (worker %d):\n", what,
                          lt->index);
        PyErr_DisplayException(exc);
    }
    Py_XDECREF(r);
    Py_DECREF(exc);
}

/* ---- the thread ----------------------------------------------------------- */

static void
before_block(pp_loop *loop, void *data)
{
    ppy_lthread *lt = data;

    (void)loop;
    lt->saved = PyEval_SaveThread();
}

static void
after_block(pp_loop *loop, void *data)
{
    ppy_lthread *lt = data;

    (void)loop;
    PyEval_RestoreThread(lt->saved);
    lt->saved = NULL;
}

static int
lthread_setup(ppy_lthread *lt)
{
    PyObject *wmod = PyImport_ImportModule("pyparallel._worker");

    if (wmod == NULL)
        return -1;
    lt->log_error = PyObject_GetAttrString(wmod, "log_callback_error");
    Py_DECREF(wmod);
    return lt->log_error ? 0 : -1;
}

static void
lthread_main(void *arg)
{
    ppy_lthread *lt = arg;
    pp_link *l, *next;
    ppy_cmd *cmd;
    int rc, failures = 0;

    ppy_lthread_current = lt;
    lt->ts = PyThreadState_New(lt->interp);
    PyEval_RestoreThread(lt->ts);
    if (lthread_setup(lt) < 0) {
        ppy_lthread_log_error(lt, "starting a loop thread", NULL);
        pthread_mutex_lock(&lt->mu);
        lt->stopped = 1;
        pthread_mutex_unlock(&lt->mu);
        pp_word_set(&lt->started, 2);
    } else {
        pp_loop_set_block_hooks(lt->loop, before_block, after_block, lt);
        pp_word_set(&lt->started, 1);
        if ((rc = pp_loop_run(lt->loop)) < 0)
            ppy_io_report(lt->index, "its event loop's poll failed; the "
                          "worker closes its connections, clients and timers "
                          "and takes no more I/O", rc);
    }

    /* Stopping: commands that raced with the stop still get run (they were
     * queued before `stopped` was set), then everything here is closed. */
    pthread_mutex_lock(&lt->mu);
    lt->stopped = 1;
    cmd = lt->head;
    lt->head = lt->tail = NULL;
    pthread_mutex_unlock(&lt->mu);
    while (cmd) {
        ppy_cmd *next = cmd->next;
        run_cmd(lt, cmd);
        cmd = next;
    }
    ppy_timer_close_all(lt);
    for (l = lt->endpoints.next; l != &lt->endpoints; l = next) {
        next = l->next;          /* close() may unlink it at once */
        pp_container_of(l, ppy_endpoint, link)->close(
            pp_container_of(l, ppy_endpoint, link));
    }
    /* Closing finishes in the loop's pending phase, which runs even when
     * the poll fails; a poll that keeps failing is said once. */
    while (!pp_link_empty(&lt->endpoints)) {
        if ((rc = pp_loop_run_once(lt->loop, 10)) < 0 && failures++ == 0)
            ppy_io_report(lt->index, "its event loop's poll failed while "
                          "closing", rc);
    }
    ppy_client_fini(lt);
    pp_loop_set_block_hooks(lt->loop, NULL, NULL, NULL);
    pp_async_stop(lt->loop, &lt->async);
    Py_CLEAR(lt->log_error);
    PyThreadState_Clear(lt->ts);
    PyThreadState_DeleteCurrent();
    lt->ts = NULL;
    ppy_lthread_current = NULL;
}

ppy_lthread *
ppy_lthread_start(struct ppy_worker *w, int index, PyInterpreterState *interp,
                 ppy_state *st)
{
    ppy_lthread *lt = calloc(1, sizeof(*lt));
    int rc;

    if (lt == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    lt->worker = w;
    lt->index = index;
    lt->interp = interp;
    lt->st = st;
    pthread_mutex_init(&lt->mu, NULL);
    pp_word_init(&lt->started, 0);
    pp_link_init_head(&lt->endpoints);
    pp_link_init_head(&lt->timers);
    if ((rc = pp_loop_create(&lt->loop)) < 0)
        goto fail;
    pp_async_start(lt->loop, &lt->async, on_commands, lt);
    if ((rc = -pp_thread_start(&lt->thread, lthread_main, lt)) < 0) {
        pp_async_stop(lt->loop, &lt->async);
        goto fail;
    }
    /* Wait until it runs (started 1) or has failed to (2: the thread has
     * ended; the worker still joins and frees it). */
    Py_BEGIN_ALLOW_THREADS
    while (pp_word_get(&lt->started) == 0)
        pp_word_wait(&lt->started, 0, 0, -1);
    Py_END_ALLOW_THREADS
    return lt;
fail:
    /* Nothing but the stopped async handle was ever on this loop. */
    if (lt->loop && pp_loop_destroy(lt->loop) < 0)
        ppy_io_report(index, "a loop that never ran is still busy; leaking it",
                      -EBUSY);
    pthread_mutex_destroy(&lt->mu);
    free(lt);
    errno = -rc;
    PyErr_SetFromErrno(PyExc_OSError);
    return NULL;
}

void
ppy_lthread_stop_join(ppy_lthread *lt)
{
    int rc;

    pthread_mutex_lock(&lt->mu);
    lt->stopped = 1;
    pthread_mutex_unlock(&lt->mu);
    pp_loop_stop(lt->loop);
    if ((rc = pp_thread_join(&lt->thread)) != 0)
        ppy_io_report(lt->index, "joining the loop thread failed", -rc);
    /* The thread closed everything before it ended; a loop still busy
     * means something is still registered on it (a bug): leak it rather
     * than free memory it points into. */
    if ((rc = pp_loop_destroy(lt->loop)) < 0)
        ppy_io_report(lt->index, "the loop is still busy after its thread "
                      "ended; leaking it", rc);
    lt->loop = NULL;
}

void
ppy_lthread_free(ppy_lthread *lt)
{
    pthread_mutex_destroy(&lt->mu);
    free(lt);
}
