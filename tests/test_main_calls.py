"""call_from_main_thread[_and_wait]() from workers: no combination of API
calls may deadlock, a blocked main-thread call does not stop Futures from
completing, and SystemExit / KeyboardInterrupt raised in a main-thread call
reach the main thread as a signal handler's would.  Every case runs in a
subprocess, so a hang or a crash fails one test."""

import signal
import sys

import pytest

import support

DEADLOCK = "which is itself waiting for the function that makes this call"


def run(tmp_path, code, timeout=90, **kw):
    return support.run_code(tmp_path, code, timeout=timeout, **kw)


def test_a_loop_callback_waiting_on_main_that_waits_on_its_loop_fails_fast(tmp_path):
    # Before: the loop thread waited for main, main waited for the loop,
    # the completion thread stopped completing Futures, and exit hung.
    r = run(tmp_path, """
        import socket, pyparallel, tasks
        import io_protocols as P
        pyparallel.configure(workers=2)
        srv = pyparallel.server("127.0.0.1", 0, P.AsksMain)
        P.MAIN["server"] = srv
        s = socket.create_connection(srv.address, timeout=30)
        f = s.makefile("rwb")
        def ask(line):
            f.write(line.encode() + b"\\n"); f.flush()
            return f.readline().decode().strip()
        me = int(ask("whoami").split()[1])
        other = 1 - me
        P.MAIN["timer"] = pyparallel.timer(60, P.record, ("t",), worker=me)
        print("stats:", ask("main_stats"))
        print("own timer:", ask("main_timer_on %d" % me))
        print("other timer:", ask("main_timer_on %d" % other))
        print("cancel:", ask("main_cancel"))
        # Futures kept completing all along
        print("task:", pyparallel.submit(tasks.add, 1, 2).result(timeout=10))
        print("close:", ask("main_close"))
        P.MAIN["timer"].cancel()
        srv.close()
        print("done")
        """)
    r.assert_clean_exit(0)
    out = r.stdout
    for what in ("stats:", "own timer:", "cancel:", "close:"):
        line = next(l for l in out.splitlines() if l.startswith(what))
        assert "RuntimeError" in line and DEADLOCK in line, (what, out)
    assert "other timer: ok" in out
    assert "task: 3" in out and "done" in out


def test_a_task_waiting_on_main_that_waits_on_that_task_fails_fast(tmp_path):
    r = run(tmp_path, """
        import pyparallel, tasks
        f = pyparallel.submit(tasks.ask_main_to_wait_for, "self")
        tasks.FUTURES["self"] = f
        try:
            f.result(timeout=30)
        except RuntimeError as e:
            print("RuntimeError", e)
        print("after", pyparallel.submit(tasks.add, 2, 2).result(timeout=10))
        """)
    r.assert_clean_exit(0)
    assert "RuntimeError" in r.stdout and DEADLOCK in r.stdout, r.describe()
    assert "after 4" in r.stdout


def test_calls_queued_behind_a_waiting_main_call_still_run(tmp_path):
    # A main-thread call waits for task B; task B itself needs a main-thread
    # call, queued behind the first: it runs meanwhile.
    r = run(tmp_path, """
        import os, tempfile, pyparallel, tasks
        ex = pyparallel.Executor(2)
        d = tempfile.mkdtemp()
        started = os.path.join(d, "started")
        b = ex.submit(tasks.ask_main_quick_after, started, 21)
        tasks.FUTURES["b"] = b
        a = ex.submit(tasks.ask_main_to_wait_for, "b")
        import time; time.sleep(0.3)          # a's call is waiting for b
        open(started, "w").close()
        print("a", a.result(timeout=30), "b", b.result(timeout=30))
        ex.shutdown()
        """)
    r.assert_clean_exit(0)
    assert "a 42 b 42" in r.stdout, r.describe()


def test_futures_complete_while_a_main_call_blocks(tmp_path):
    # The completion thread used to run main-thread calls: a call that
    # blocked stopped every Future's callbacks meanwhile.
    r = run(tmp_path, """
        import threading, time, pyparallel, tasks
        ex = pyparallel.Executor(2)
        slow = ex.submit(tasks.ask_main_to_sleep, 3.0)
        time.sleep(0.3)                       # the main-thread call sleeps now
        fired = threading.Event()
        quick = ex.submit(tasks.add, 1, 1)
        quick.add_done_callback(lambda f: fired.set())
        assert fired.wait(2.0), "callback delayed by a blocked main-thread call"
        print("quick callback fired while slow running:", not slow.done())
        print("slow", slow.result(timeout=30))
        ex.shutdown()
        """)
    r.assert_clean_exit(0)
    assert "quick callback fired while slow running: True" in r.stdout, r.describe()
    assert "slow 3.0" in r.stdout


# ---- SystemExit and KeyboardInterrupt from a main-thread call ------------------

@pytest.mark.parametrize("where", ["loop", "result", "run"])
def test_sys_exit_from_a_worker_exits_the_program_cleanly(tmp_path, where):
    # Before: the completion thread's PyErr_Print() exited the process from
    # that thread: a segfault, or status 1 with "Exception ignored in atexit
    # callback ... cannot run inside a Future callback".
    wait = {
        "loop": "while True: time.sleep(0.01)",
        "result": "pyparallel.submit(tasks.sleep_return, 30).result()",
        "run": "pyparallel.run(timeout=30)",
    }[where]
    r = run(tmp_path, """
        import time, pyparallel, tasks
        pyparallel.submit(tasks.fire_sys_exit, 3)
        print("waiting", flush=True)
        %s
        print("main went on")
        """ % wait)
    r.assert_clean_exit(3)
    assert "waiting" in r.stdout and "main went on" not in r.stdout, r.describe()


def test_sys_exit_from_a_waited_main_call(tmp_path):
    r = run(tmp_path, """
        import time, pyparallel, tasks
        f = pyparallel.submit(tasks.fire_sys_exit, 4, True)
        while True:
            time.sleep(0.01)
        """)
    r.assert_clean_exit(4)


def test_keyboard_interrupt_from_a_worker_reaches_main(tmp_path):
    r = run(tmp_path, """
        import time, pyparallel, tasks
        try:
            pyparallel.submit(tasks.fire_keyboard_interrupt).result(timeout=30)
            while True:
                time.sleep(0.01)
        except KeyboardInterrupt as e:
            print("caught", e)
        print("after", pyparallel.submit(tasks.add, 1, 1).result(timeout=30))
        """)
    r.assert_clean_exit(0)
    assert "caught from a worker's main-thread call" in r.stdout, r.describe()
    assert "after 2" in r.stdout


def test_sys_exit_in_a_done_callback_reaches_main(tmp_path):
    r = run(tmp_path, """
        import sys, time, pyparallel, tasks
        f = pyparallel.submit(tasks.sleep_return, 0.2)
        f.add_done_callback(lambda f: sys.exit(5))
        while True:
            time.sleep(0.01)
        """)
    r.assert_clean_exit(5)


def test_an_ordinary_exception_in_a_main_call_is_reported_and_main_goes_on(tmp_path):
    r = run(tmp_path, """
        import pyparallel, tasks
        pyparallel.submit(tasks.fire_to_main_raising, "boom").result(timeout=30)
        import time; time.sleep(0.5)
        print("main went on")
        """)
    r.assert_clean_exit(0)
    assert "main went on" in r.stdout
    assert "ValueError: boom" in r.stderr and "call_from_main_thread() call" in r.stderr, r.describe()


def test_many_waited_main_calls_that_raise_from_every_worker(tmp_path):
    # Before: the main-call thread read the call's record after publishing
    # its failure, by which time the waiting worker could have freed it
    # (a use-after-free that ASan caught in a CI run).
    r = run(tmp_path, """
        import pyparallel, tasks
        pyparallel.configure(workers=2)
        fs = [pyparallel.submit(tasks.ask_main_to_raise_many, 1500, "m%d" % i)
              for i in range(4)]
        print("ok:", [f.result(timeout=120) for f in fs])
        """, timeout=180)
    r.assert_clean_exit(0)
    assert "ok: [1500, 1500, 1500, 1500]" in r.stdout, r.describe()
