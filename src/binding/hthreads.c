/* hthreads.c -- handler threads of an HTTP site (`--threads N`).
 *
 * Without them (the fast path) the worker's loop thread calls every
 * handler itself: no hand-off, but a handler that blocks (a database,
 * time.sleep) stalls every other connection of that worker.  With N
 * handler threads the loop thread still reads, parses and routes each
 * request, then queues a job; a handler thread -- a thread state of its
 * own in the same worker interpreter, so it shares the worker's GIL, as
 * gunicorn's gthread threads share a process's -- takes it, runs the
 * handler, and hands the result back through the site's pp_async.  The
 * loop thread turns it into the answer: every engine call stays on the
 * loop thread.
 *
 *   loop thread                       handler thread (GIL while it runs)
 *   on_request: route, make the job   wait on the queue (no GIL)
 *     -> queue, signal  ------------> run(job): call the handler
 *   done async: finish(job) <-------- done list, pp_async_send
 *     answer, release the request
 *
 * Stopping (the site going away, on the loop thread): the threads finish
 * the job they run and end; queued jobs that never ran are answered 503;
 * finished ones are answered as usual.
 */
#include "ppy_http.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

typedef struct hthread {
    struct ppy_http_threads *pool;
    PyThreadState *ts;
    pp_thread thread;
    int started;
} hthread;

struct ppy_http_threads {
    ppy_http_site *site;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ppy_http_job *head, *tail;   /* to run */
    ppy_http_job *done;          /* run, to finish (LIFO; reversed) */
    int stopping;
    pp_async async;
    int n;
    hthread t[];
};

ppy_http_job *
ppy_http_job_new(ppy_http_site *s, pp_http_request *req,
                 void (*run)(ppy_http_job *), void (*finish)(ppy_http_job *, int))
{
    ppy_http_job *j = calloc(1, sizeof(*j));

    if (j == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    j->site = s;
    j->req = req;
    j->run = run;
    j->finish = finish;
    pp_http_hold(req);
    return j;
}

/* Finishes j on the loop thread and frees it.  GIL held. */
static void
job_end(ppy_http_job *j, int cancelled)
{
    size_t i;

    j->finish(j, cancelled);
    if (PyErr_Occurred())
        ppy_lthread_log_error(j->site->lt, "an HTTP request", NULL);
    for (i = 0; i < sizeof j->args / sizeof j->args[0]; i++)
        Py_XDECREF(j->args[i]);
    Py_XDECREF(j->result);
    Py_XDECREF(j->exc);
    pp_http_release(j->req);
    free(j);
}

static void
on_done(pp_loop *loop, pp_async *async)
{
    ppy_http_threads *p = async->data;
    ppy_http_job *list, *rev = NULL;

    (void)loop;
    pthread_mutex_lock(&p->mu);
    list = p->done;
    p->done = NULL;
    pthread_mutex_unlock(&p->mu);
    while (list) {               /* oldest first */
        ppy_http_job *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev) {
        ppy_http_job *next = rev->next;
        job_end(rev, 0);
        rev = next;
    }
}

static void
hthread_main(void *arg)
{
    hthread *t = arg;
    ppy_http_threads *p = t->pool;

    /* Made here, not by the starter: a thread state binds to the thread
     * that creates it. */
    t->ts = PyThreadState_New(p->site->lt->interp);
    PyEval_RestoreThread(t->ts);
    for (;;) {
        PyThreadState *ts = PyEval_SaveThread();
        ppy_http_job *j;

        pthread_mutex_lock(&p->mu);
        while (p->head == NULL && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        if ((j = p->stopping ? NULL : p->head) != NULL) {
            if ((p->head = j->next) == NULL)
                p->tail = NULL;
        }
        pthread_mutex_unlock(&p->mu);
        PyEval_RestoreThread(ts);
        if (j == NULL)
            break;
        j->run(j);
        if (j->result == NULL && j->exc == NULL)
            j->exc = PyErr_GetRaisedException();
        pthread_mutex_lock(&p->mu);
        j->next = p->done;
        p->done = j;
        pthread_mutex_unlock(&p->mu);
        pp_async_send(&p->async);
    }
    PyThreadState_Clear(t->ts);
    PyThreadState_DeleteCurrent();
}

int
ppy_http_threads_start(ppy_http_site *s, int n)
{
    ppy_http_threads *p = calloc(1, sizeof(*p) + (size_t)n * sizeof(hthread));
    int i, rc;

    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    p->site = s;
    p->n = n;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if ((rc = pp_async_start(s->lt->loop, &p->async, on_done, p)) < 0) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        free(p);
        errno = -rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    s->threads = p;
    /* PEP 3333: the app may now be called by two threads at once. */
    if (s->environ_base && PyDict_SetItemString(s->environ_base, "wsgi.multithread", Py_True) < 0) {
        ppy_http_threads_stop(s);
        return -1;
    }
    for (i = 0; i < n; i++) {
        hthread *t = &p->t[i];
        t->pool = p;
        if ((rc = pp_thread_start(&t->thread, hthread_main, t)) < 0) {
            errno = -rc;
            PyErr_SetFromErrno(PyExc_OSError);
            ppy_http_threads_stop(s);
            return -1;
        }
        t->started = 1;
    }
    return 0;
}

int
ppy_http_threads_submit(ppy_http_site *s, ppy_http_job *j)
{
    ppy_http_threads *p = s->threads;

    pthread_mutex_lock(&p->mu);
    j->next = NULL;
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void
ppy_http_threads_stop(ppy_http_site *s)
{
    ppy_http_threads *p = s->threads;
    ppy_http_job *j;
    PyThreadState *ts;
    int i;

    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    ts = PyEval_SaveThread();    /* the threads need the GIL to finish */
    for (i = 0; i < p->n; i++)
        if (p->t[i].started)
            (void)pp_thread_join(&p->t[i].thread);
    PyEval_RestoreThread(ts);
    on_done(s->lt->loop, &p->async);   /* what they finished */
    while ((j = p->head) != NULL) {    /* what never ran */
        p->head = j->next;
        job_end(j, 1);
    }
    pp_async_stop(s->lt->loop, &p->async);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    s->threads = NULL;
    free(p);
}
