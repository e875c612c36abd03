"""A gotflow child process that dies with its task.

Every child gets PR_SET_PDEATHSIG (SIGKILL) so that it cannot outlive the
Python worker that started it, even when that worker is killed; on a normal
end the task terminates it with SIGTERM, then SIGKILL after a grace period.
Its stderr is drained by a thread that keeps the last lines for the
exception raised when it fails.
"""

import collections
import ctypes
import signal
import subprocess
import threading
import time

_PR_SET_PDEATHSIG = 1
_STDERR_LINES = 30


def _die_with_parent():
    """preexec_fn: ask the kernel to SIGKILL the child when the thread that
    forked it exits."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:  # not Linux: terminate()/kill() at task end still apply
        pass


class ChildError(RuntimeError):
    """A gotflow child failed; the message carries its last stderr lines."""


class Child:
    """One gotflow process with piped stdin/stdout and a drained stderr."""

    def __init__(self, argv, env, what, stdin=True, stdout=True, pass_fds=()):
        self.what = what
        self.argv = list(argv)
        self._tail = collections.deque(maxlen=_STDERR_LINES)
        self._lines = []  # every stderr line, for callers that watch it
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            preexec_fn=_die_with_parent,
            close_fds=True,
            pass_fds=tuple(pass_fds),
        )
        self._stderr_thread = threading.Thread(target=self._drain, name=f"{what} stderr", daemon=True)
        self._stderr_thread.start()

    @property
    def pid(self):
        return self.proc.pid

    def _drain(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self._tail.append(line)
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for_line(self, predicate, timeout):
        """Waits until a stderr line satisfies predicate and returns it; None
        when the child exits or the timeout passes first."""
        seen = 0
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                while seen < len(self._lines):
                    line = self._lines[seen]
                    seen += 1
                    if predicate(line):
                        return line
                if self.proc.poll() is not None and not self._stderr_thread.is_alive():
                    return None
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))

    def lines(self):
        """Every stderr line so far (all of them once the child exited)."""
        self._stderr_thread.join(timeout=5 if self.proc.poll() is not None else 0)
        with self._cond:
            return list(self._lines)

    def stderr_tail(self):
        """The last stderr lines, joined."""
        self._stderr_thread.join(timeout=5)
        with self._cond:
            return "\n".join(self._tail)

    def error(self, summary):
        """A ChildError with summary, the exit status and the stderr tail."""
        code = self.proc.poll()
        if code is None:
            status = "still running"
        elif code < 0:
            status = f"killed by signal {-code} ({signal.Signals(-code).name})"
        else:
            status = f"exit status {code}"
        tail = self.stderr_tail()
        return ChildError(f"{summary}: {self.what} ({status}); its last stderr lines:\n{tail or '(none)'}")

    def stop(self, grace=5.0):
        """Ends the child: SIGTERM, then SIGKILL after grace seconds; waits
        for it and closes the pipes. Idempotent."""
        p = self.proc
        if p.poll() is None:
            try:
                p.terminate()
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=30)
        for f in (p.stdin, p.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._stderr_thread.join(timeout=5)
        if p.stderr is not None:
            p.stderr.close()
