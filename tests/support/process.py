"""One way to run a server the tests need as a real child process.

Every process-level helper (a redis-server, a catalog replica, the operator,
Prometheus) starts, waits for, signals and stops its child the same way, so
a test that kills or freezes one does not need to know which kind it is, and
no child outlives the test that started it.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from tests.support.waiting import wait_until


class ProcessExited(RuntimeError):
    """The child ended while the test was waiting for it to become ready."""


class ManagedProcess:
    """A child process with its output in a log file.

    ``start`` launches it; ``wait_until_ready(probe)`` polls ``probe`` (the only
    readiness signal a separate process offers) and fails at once, with the
    log's tail, if the child exits meanwhile; ``stop`` asks politely, then
    kills; ``kill``/``pause``/``resume`` are the faults tests inject.
    """

    def __init__(self, name: str, argv: Sequence[str], *, log_path: Path | None = None,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def start(self, *, detach: bool = False) -> ManagedProcess:
        """Launch the child; ``detach`` puts it in its own session (it then
        survives its parent, as ``make demo`` wants)."""
        output: int | IO[bytes] = subprocess.DEVNULL
        if self.log_path is not None:
            self._log = output = open(self.log_path, "ab")  # noqa: SIM115 (lives with the child)
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=output,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=detach)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise ProcessExited (with the log's tail) if the child has ended."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessExited(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def wait_until_ready(self, probe: Callable[[], Any], *, timeout: float = 30.0,
                   interval: float = 0.05) -> Any:
        """Poll ``probe`` until it returns something truthy; connection errors
        count as "not yet"."""

        def ready() -> Any:
            self.check_alive()
            try:
                return probe()
            except (OSError, ValueError):
                return None

        try:
            return wait_until(ready, timeout=timeout, interval=interval,
                              what=f"{self.name} to be ready")
        except AssertionError as exc:
            raise RuntimeError(f"{exc}\n{self.tail()}") from None

    def tail(self, lines: int = 30) -> str:
        if self.log_path is None:
            return ""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def send(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing."""
        self.send(signal.SIGSTOP)

    def resume(self) -> None:
        self.send(signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Send ``sig`` (a paused child is resumed first so it can act on it),
        wait up to ``timeout``, then SIGKILL; returns the exit code."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(sig)
                    if sig != signal.SIGKILL:
                        self.proc.send_signal(signal.SIGCONT)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            code = self.proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)
