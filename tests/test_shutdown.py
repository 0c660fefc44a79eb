"""Process exit with pyparallel running: every way out is clean and nothing
hangs.  Each case runs a script in a subprocess with a timeout."""

import signal
import sys

import pytest

import support


def test_normal_exit_with_work_queued(tmp_path):
    r = support.run_code(tmp_path, """
        import pyparallel, tasks
        futs = [pyparallel.submit(tasks.sleep_return, 0.01, i) for i in range(100)]
        print("submitted", len(futs))
        """, timeout=60)
    r.assert_clean_exit(0)
    assert "submitted 100" in r.stdout


@pytest.mark.parametrize("how", ["default", "executor", "wait_false"])
def test_work_submitted_before_exit_runs(tmp_path, how):
    # It used to be cancelled at exit; the stdlib executors run it.
    out = tmp_path / "out.txt"
    start = {
        "default": "submit = pyparallel.submit",
        "executor": "ex = pyparallel.Executor(2); submit = ex.submit",
        "wait_false": "ex = pyparallel.Executor(2); submit = ex.submit",
    }[how]
    end = "ex.shutdown(wait=False)" if how == "wait_false" else "pass"
    r = support.run_code(tmp_path, """
        import pyparallel, tasks
        %s
        futs = [submit(tasks.sleep_return, 0.2) for _ in range(2)]
        futs += [submit(tasks.append_line, %r, str(i)) for i in range(40)]
        %s
        print("script ends")
        """ % (start, str(out), end), timeout=60)
    r.assert_clean_exit(0)
    assert sorted(out.read_text().split()) == sorted(str(i) for i in range(40))
    assert r.stdout.count("task output") == 40, r.describe()


def test_normal_exit_after_results(tmp_path):
    r = support.run_code(tmp_path, """
        import pyparallel, tasks
        f = pyparallel.freeze({"a": list(range(1000))})
        print(sum(pyparallel.map(tasks.inc, range(1000))))
        print(pyparallel.submit(tasks.identity, f).result(timeout=60) is f)
        """, timeout=60)
    r.assert_clean_exit(0)
    assert r.stdout.split() == [str(sum(range(1, 1001))), "True"]


def test_exit_without_ever_starting_workers(tmp_path):
    r = support.run_code(tmp_path, """
        import pyparallel
        f = pyparallel.freeze({"x": [1, 2, 3]})
        print("frozen", len(f))
        """, timeout=60)
    r.assert_clean_exit(0)
    assert "frozen 1" in r.stdout


def test_exception_escaping_main_script(tmp_path):
    r = support.run_code(tmp_path, """
        import pyparallel, tasks
        futs = [pyparallel.submit(tasks.sleep_return, 0.01, i) for i in range(50)]
        assert futs[0].result(timeout=60) == 0
        raise RuntimeError("escaped from main")
        """, timeout=60)
    assert r.returncode == 1, r.describe()
    assert "Traceback" in r.stderr and "RuntimeError: escaped from main" in r.stderr
    r.assert_no_crash_output()


def test_sys_exit_code_is_kept(tmp_path):
    r = support.run_code(tmp_path, """
        import sys, pyparallel, tasks
        pyparallel.submit(tasks.sleep_return, 0.05).result(timeout=60)
        futs = [pyparallel.submit(tasks.sleep_return, 0.01) for _ in range(20)]
        sys.exit(3)
        """, timeout=60)
    r.assert_clean_exit(3)


def test_explicit_shutdown_then_exit(tmp_path):
    r = support.run_code(tmp_path, """
        import pyparallel, tasks
        futs = [pyparallel.submit(tasks.inc, i) for i in range(100)]
        pyparallel.shutdown()
        assert all(f.done() for f in futs)
        print("results", sum(f.result() for f in futs))
        try:
            pyparallel.submit(tasks.inc, 1)
        except RuntimeError as e:
            print("after shutdown:", e)
        """, timeout=60)
    r.assert_clean_exit(0)
    assert "results 5050" in r.stdout
    assert "after shutdown:" in r.stdout and "configure" in r.stdout


def test_shutdown_configure_restart_then_exit(tmp_path):
    r = support.run_code(tmp_path, """
        import pyparallel, tasks
        for round in range(3):
            pyparallel.configure(workers=round + 1)
            print(list(pyparallel.map(tasks.inc, range(5))))
            pyparallel.shutdown()
        pyparallel.configure()
        print(pyparallel.submit(tasks.inc, 99).result(timeout=60))
        """, timeout=60)
    r.assert_clean_exit(0)
    assert r.stdout.split("\n")[:4] == ["[1, 2, 3, 4, 5]"] * 3 + ["100"]


def test_shutdown_cancel_futures_then_exit(tmp_path):
    r = support.run_code(tmp_path, """
        import pyparallel, tasks
        futs = [pyparallel.submit(tasks.sleep_return, 0.05, i) for i in range(200)]
        pyparallel.shutdown(wait=True, cancel_futures=True)
        n_cancelled = sum(f.cancelled() for f in futs)
        assert all(f.done() for f in futs)
        print("cancelled", n_cancelled > 100)
        """, timeout=60)
    r.assert_clean_exit(0)
    assert "cancelled True" in r.stdout


def test_executor_left_open_at_exit(tmp_path):
    r = support.run_code(tmp_path, """
        import pyparallel, tasks
        ex = pyparallel.Executor(max_workers=2)
        futs = [ex.submit(tasks.sleep_return, 0.01, i) for i in range(40)]
        print("first", futs[0].result(timeout=60))
        """, timeout=60)
    r.assert_clean_exit(0)
    assert "first 0" in r.stdout


def test_executor_garbage_collected_without_shutdown(tmp_path):
    r = support.run_code(tmp_path, """
        import gc, pyparallel, tasks
        for i in range(3):
            ex = pyparallel.Executor(max_workers=2)
            assert ex.submit(tasks.inc, i).result(timeout=60) == i + 1
            del ex
            gc.collect()
        print("ok")
        """, timeout=60)
    r.assert_clean_exit(0)
    assert "ok" in r.stdout


def test_exit_while_main_thread_is_not_the_submitter(tmp_path):
    r = support.run_code(tmp_path, """
        import threading, pyparallel, tasks
        def side():
            futs = [pyparallel.submit(tasks.sleep_return, 0.01, i) for i in range(50)]
            print("side", futs[-1].result(timeout=60))
        t = threading.Thread(target=side)
        t.start()
        t.join()
        """, timeout=60)
    r.assert_clean_exit(0)
    assert "side 49" in r.stdout


def test_daemon_thread_submitting_at_exit(tmp_path):
    r = support.run_code(tmp_path, """
        import threading, time, pyparallel, tasks
        def side():
            while True:
                try:
                    pyparallel.submit(tasks.inc, 1).result(timeout=60)
                except RuntimeError:
                    return
        t = threading.Thread(target=side, daemon=True)
        t.start()
        time.sleep(0.3)
        print("bye")
        """, timeout=60)
    r.assert_clean_exit(0)
    assert "bye" in r.stdout


def test_exit_after_workers_used_threading_and_logging(tmp_path):
    """Workers that called threading.current_thread() (logging does, for
    the thread name) leave no "Exception ignored" noise at exit."""
    r = support.run_code(tmp_path, """
        import logging, threading, pyparallel, tasks
        print(pyparallel.submit(tasks.import_and_check, "threading").result(timeout=60))
        print(pyparallel.submit(tasks.log_in_worker, "hello").result(timeout=60))
        """, timeout=60)
    r.assert_clean_exit(0)
    assert "hello" in r.stderr


SIGINT_SCRIPT = """
    import pyparallel, tasks
    # ~60 s of queued work on 2 workers: the first Ctrl-C ends the script
    # and exit runs the queued work, the second exits at once
    futs = [pyparallel.submit(tasks.sleep_return, 0.1, i) for i in range(1200)]
    futs[0].result(timeout=60)
    print("ready", flush=True)
    for f in futs:
        f.result()
    print("finished all work (should have been interrupted)")
"""


def test_sigint_while_work_is_queued(tmp_path):
    path = support.write_script(tmp_path, SIGINT_SCRIPT)
    r, elapsed = support.run_until_ready_then_signal([sys.executable, path],
                                                     sig=signal.SIGINT, timeout=30,
                                                     again_after=1.0)
    assert r.returncode == 130, r.describe()       # the second Ctrl-C: os._exit(130)
    assert "KeyboardInterrupt" in r.stderr, r.describe()
    assert "running the" in r.stderr and "Ctrl-C again to exit at once" in r.stderr
    assert "finished all work" not in r.stdout
    r.assert_no_crash_output()


def test_sigint_then_exit_runs_the_queued_work(tmp_path):
    # Like ThreadPoolExecutor: work submitted before Ctrl-C still runs.
    out = tmp_path / "out.txt"
    path = support.write_script(tmp_path, """
        import pyparallel, tasks
        futs = [pyparallel.submit(tasks.sleep_return, 0.3)] * 2
        futs += [pyparallel.submit(tasks.append_line, %r, str(i)) for i in range(30)]
        print("ready", flush=True)
        futs[0].result(timeout=60)
        import time; time.sleep(60)
        """ % str(out))
    r, elapsed = support.run_until_ready_then_signal([sys.executable, path],
                                                     sig=signal.SIGINT, timeout=60)
    assert r.returncode in (-signal.SIGINT, 130, 1), r.describe()
    assert "KeyboardInterrupt" in r.stderr, r.describe()
    assert sorted(out.read_text().split()) == sorted(str(i) for i in range(30))
    r.assert_no_crash_output()


def test_sigint_while_blocked_in_map(tmp_path):
    path = support.write_script(tmp_path, """
        import pyparallel, tasks
        pyparallel.submit(tasks.noop).result(timeout=60)
        print("ready", flush=True)
        out = list(pyparallel.map(tasks.sleep_return, [0.1] * 1200))
        print("finished all work (should have been interrupted)")
        """)
    r, elapsed = support.run_until_ready_then_signal([sys.executable, path],
                                                     sig=signal.SIGINT, timeout=30,
                                                     again_after=1.0)
    assert r.returncode != 0, r.describe()
    assert "finished all work" not in r.stdout
    r.assert_no_crash_output()


def test_sigint_with_call_from_main_thread_pending(tmp_path):
    path = support.write_script(tmp_path, """
        import pyparallel, tasks
        futs = [pyparallel.submit(tasks.append_via_main_and_wait, i) for i in range(400)]
        futs += [pyparallel.submit(tasks.sleep_return, 0.1) for _ in range(600)]
        futs[0].result(timeout=60)
        print("ready", flush=True)
        for f in futs:
            f.result()
        """)
    r, elapsed = support.run_until_ready_then_signal([sys.executable, path],
                                                     sig=signal.SIGINT, timeout=30,
                                                     again_after=1.0)
    assert r.returncode != 0, r.describe()
    r.assert_no_crash_output()


def test_exit_with_long_running_task_and_queue(tmp_path):
    """A task still running at normal exit: the process waits for it (like
    ThreadPoolExecutor) or abandons it, but exits cleanly either way."""
    r = support.run_code(tmp_path, """
        import pyparallel, tasks
        futs = [pyparallel.submit(tasks.sleep_return, 1.0, i) for i in range(2)]
        print("leaving")
        """, timeout=60)
    r.assert_clean_exit(0)


# ---- with servers, connections and timers open (issue 3) -------------------

def test_exit_with_a_connection_open_runs_connection_lost(tmp_path):
    r = support.run_code(tmp_path, """
        import socket, pyparallel, io_protocols
        srv = pyparallel.server("127.0.0.1", 0, io_protocols.LostPrinter)
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"hi"); assert s.recv(2) == b"hi"
        t = pyparallel.timer(0, io_protocols.noop_tick, period=0.001)
        print("exiting", flush=True)
        """, timeout=60)
    r.assert_clean_exit(0)
    assert r.stdout.split() == ["exiting", "lost", "None"]


def test_shutdown_with_a_server_open(tmp_path):
    r = support.run_code(tmp_path, """
        import socket, pyparallel, io_protocols
        srv = pyparallel.server("127.0.0.1", 0, io_protocols.LostPrinter)
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"hi"); assert s.recv(2) == b"hi"
        t = pyparallel.timer(0, io_protocols.noop_tick, period=0.001)
        pyparallel.shutdown()                  # the workers end: so do their connections
        print("eof", s.recv(10) == b"", flush=True)
        # Objects that outlive the workers still answer (their loop threads
        # are gone, not freed).
        t.cancel()
        print("timer", t.active, srv.stats()["connections"], flush=True)
        print("closed", srv.close(timeout=10), flush=True)
        try:
            pyparallel.server("127.0.0.1", 0, io_protocols.LostPrinter)
        except RuntimeError as e:
            print("refused", "shut down" in str(e))
        """, timeout=60)
    r.assert_clean_exit(0)
    assert r.stdout.split() == ["lost", "None", "eof", "True", "timer", "False", "0",
                                "closed", "True", "refused", "True"]


def test_shutdown_racing_a_loop_thread_start(tmp_path):
    # The worker read its loop-thread pointer while a main thread was still
    # starting the loop thread: shutdown() could end the interpreter under a
    # live loop thread.  Now one of the two wins, cleanly, every time.
    r = support.run_code(tmp_path, """
        import threading, pyparallel, tasks
        outcomes = set()
        for i in range(25):
            pyparallel.configure(workers=2)
            assert pyparallel.submit(tasks.inc, 1).result(timeout=60) == 2
            def start():
                try:
                    t = pyparallel.timer(30, tasks.noop, worker=i % 2)
                    outcomes.add("started")
                    t.cancel()
                except RuntimeError as e:
                    assert "shut down" in str(e), e
                    outcomes.add("refused")
            th = threading.Thread(target=start)
            th.start()
            pyparallel.shutdown(wait=True)
            th.join(60)
            assert not th.is_alive()
        print("ok", sorted(outcomes))
        """, timeout=240)
    r.assert_clean_exit(0)
    assert "ok" in r.stdout
