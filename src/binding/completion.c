/* completion.c -- the completion thread.
 *
 * A C thread holding a main-interpreter thread state.  It drains the pool's
 * done queue -- finished tasks and call_from_main_thread() requests -- in
 * batches, taking the main GIL once per batch: it completes the tasks'
 * Futures (unless a waiting caller did already) and runs the requests.
 */
#include "pool_internal.h"

void
ppy__completer_main(void *arg)
{
    ppy_pool *pool = arg;
    PyThreadState *ts = PyThreadState_New(pool->main_interp);
    pp_qnode *chain, *next;

    for (;;) {
        chain = pp_queue_pop_all(&pool->done, 0);
        if (chain == NULL)
            break;                 /* closed and drained */
        PyEval_RestoreThread(ts);
        for (; chain; chain = next) {
            ppy_item *item = pp_container_of(chain, ppy_item, node);
            next = chain->next;
            if (item->kind == ITEM_TASK) {
                ppy_task *t = pp_container_of(item, ppy_task, item);
                if (ppy__task_materialize(t) < 0)   /* no signals on this thread */
                    PyErr_WriteUnraisable(NULL);
                Py_DECREF(t);      /* the pipeline's reference */
            } else {
                ppy__run_maincall(pool, pp_container_of(item, ppy_maincall, item));
            }
        }
        PyEval_SaveThread();
    }
    PyEval_RestoreThread(ts);
    PyThreadState_Clear(ts);
    PyThreadState_DeleteCurrent();
}
