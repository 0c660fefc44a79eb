"""Helpers shared by the test modules (not a test module itself)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)

# Output that must never appear when a process with pyparallel exits.
BAD_EXIT_MARKERS = (
    "remaining subinterpreters",
    "Fatal Python error",
    "Segmentation fault",
    "AddressSanitizer",
    "runtime error:",          # UBSan
    "free(): invalid pointer",
    "double free",
    "Exception ignored",       # an unraisable error during teardown
)

PREAMBLE = "import sys\nsys.path.insert(0, %r)\n" % TESTS_DIR


def under_asan():
    return "asan" in os.environ.get("LD_PRELOAD", "")


def child_env(safety=False, extra=None):
    env = dict(os.environ)
    env.pop("PYPARALLEL_SAFETY", None)
    env.pop("PYTHONFAULTHANDLER", None)
    env["PYTHONUNBUFFERED"] = "1"
    if safety:
        env["PYPARALLEL_SAFETY"] = "1"
    if extra:
        env.update(extra)
    return env


class Result:
    def __init__(self, returncode, stdout, stderr, args):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.args = args

    def describe(self):
        return "command %r exited %s\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
            self.args, self.returncode, self.stdout[-6000:], self.stderr[-6000:])

    def assert_clean_exit(self, returncode=0):
        assert self.returncode == returncode, self.describe()
        self.assert_no_crash_output()

    def assert_no_crash_output(self):
        text = self.stdout + self.stderr
        for marker in BAD_EXIT_MARKERS:
            assert marker not in text, "found %r in output\n%s" % (marker, self.describe())


def run(args, *, timeout=60, safety=False, env_extra=None, cwd=None):
    """Run a command; a hang past `timeout` seconds fails the test."""
    env = child_env(safety=safety, extra=env_extra)
    try:
        cp = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                            env=env, cwd=cwd or ROOT)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise AssertionError("command %r hung (killed after %ss)\n--- stdout ---\n%s\n"
                             "--- stderr ---\n%s" % (args, timeout, out[-4000:], err[-4000:]))
    return Result(cp.returncode, cp.stdout, cp.stderr, args)


def write_script(directory, code, name="script.py", preamble=True):
    path = os.path.join(str(directory), name)
    with open(path, "w") as f:
        if preamble:
            f.write(PREAMBLE)
        f.write(textwrap.dedent(code))
    return path


def run_code(directory, code, *, name="script.py", args=(), **kw):
    """Write `code` to a script file in `directory` and run it with this
    interpreter.  The script can `import tasks` (tests/ is on its path)."""
    path = write_script(directory, code, name=name)
    return run([sys.executable, path, *args], **kw)


def run_until_ready_then_signal(args, *, sig=signal.SIGINT, ready="ready",
                                timeout=60, safety=False, cwd=None, again_after=None):
    """Start a child, wait for it to print a line `ready`, send it `sig`, and
    wait for it to exit (sending `sig` once more after `again_after`
    seconds, if given).  A child that does not exit in time fails the test."""
    env = child_env(safety=safety)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=cwd or ROOT)
    lines = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            line = proc.stdout.readline()
            if not line:
                out, err = proc.communicate(timeout=5)
                raise AssertionError("child exited before it was ready (rc=%s)\n%s\n%s\n%s"
                                     % (proc.returncode, "".join(lines), out, err))
            lines.append(line)
            if line.strip() == ready:
                break
            if time.monotonic() > deadline:
                raise AssertionError("child never printed %r" % ready)
        sent_at = time.monotonic()
        os.kill(proc.pid, sig)
        if again_after is not None:
            try:
                proc.wait(again_after)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, sig)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError("child hung after signal %s (killed after %ss)\n"
                                 "--- stdout ---\n%s%s\n--- stderr ---\n%s"
                                 % (sig, timeout, "".join(lines), out[-4000:], err[-4000:]))
        return Result(proc.returncode, "".join(lines) + out, err, args), time.monotonic() - sent_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
