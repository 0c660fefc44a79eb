/* completion.c -- the completion thread.
 *
 * A C thread holding a main-interpreter thread state.  It drains the pool's
 * done queue in batches, taking the main GIL once per batch, and completes
 * the finished tasks' Futures (unless a waiting caller did already): the
 * Futures' done-callbacks run here, as they run on a worker thread with
 * concurrent.futures.  A callback that itself waits in pyparallel keeps
 * this thread completing the rest meanwhile (ppy_pump, wait.c); a
 * SystemExit or KeyboardInterrupt from a callback goes to the main thread,
 * as from a signal handler (ppy_raise_in_main).
 */
#include "pool_internal.h"

static void
complete_one(void *ctx, pp_qnode *node)
{
    ppy_item *item = pp_container_of(node, ppy_item, node);
    ppy_task *t;

    if (item->kind == ITEM_MAINCALL) {   /* pyparallel's own, see maincall.c */
        ppy__run_maincall(ctx, pp_container_of(item, ppy_maincall, item));
        return;
    }
    t = pp_container_of(item, ppy_task, item);
    if (ppy__task_materialize(t) < 0)
        ppy_raise_in_main();
    Py_DECREF(t);                  /* the pipeline's reference */
}

void
ppy__completer_main(void *arg)
{
    ppy_pool *pool = arg;
    PyThreadState *ts = PyThreadState_New(pool->main_interp);
    ppy_pump pump = {&pool->done, NULL, complete_one, pool, 0};

    ppy_pump_set(&pump);
    while (ppy_pump_serve(&pump, ts))
        ;
    ppy_pump_set(NULL);
    PyEval_RestoreThread(ts);
    PyThreadState_Clear(ts);
    PyThreadState_DeleteCurrent();
}
