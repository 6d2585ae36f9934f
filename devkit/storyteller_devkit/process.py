"""Local processes and the conditions waited on around them.

:func:`stop_process` stops a child process (SIGTERM, a deadline, SIGKILL); :func:`wait_until` polls a
condition with a deadline, giving up early when the process it depends on has exited; :func:`http_ok`
is the readiness check most of them poll; :func:`free_port` picks a loopback port for a server.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class WaitFailed(RuntimeError):
    """A condition did not come about: its deadline passed, or the process it depended on exited."""


# free_port hands out ports below the kernel's ephemeral range (net.ipv4.ip_local_port_range, from 32768 by
# default) and above the control planes' (tests/cluster/lib.sh: up to 24800): a port the kernel picks for
# bind(0) or for an outgoing connection is never one of these, so nothing else takes one between our pick
# and the server's bind (a worker's readiness port was taken so, with tests running side by side). Each
# pytest-xdist worker draws from its own slice, so two test processes never pick the same port.
_PORTS_FROM, _SLICE, _SLICES = 25000, 600, 11
# Where in the slice this process starts: a process it starts (the demo under a test) has its own start.
_next_port = itertools.count(os.getpid() % _SLICE)


def _port_slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...: slices 1, 2, ...
    index = int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0
    start = _PORTS_FROM + (index % _SLICES) * _SLICE
    return range(start, start + _SLICE)


def free_port() -> int:
    """A TCP port free on every address right now, which this process has not handed out before (until its
    slice wraps), and which the kernel never hands out by itself (the caller binds it soon after)."""
    ports = _port_slice()
    for _ in range(len(ports)):
        port = ports[next(_next_port) % len(ports)]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue  # taken (or lingering in TIME_WAIT): the next one
            return port
    raise OSError(f"no free TCP port in {ports.start}-{ports.stop - 1}")


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """`GET url` answers 200 (any connection or HTTP error is a no)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until(
    what: str,
    check: Callable[[], T | None],
    deadline_s: float,
    *,
    every: float = 0.1,
    proc: subprocess.Popen[Any] | None = None,
    context: Callable[[], str] | None = None,
    retry_on: tuple[type[Exception], ...] = (),
) -> T:
    """Poll `check` until it returns something truthy, and return that.

    Raises :class:`WaitFailed` naming `what` once `deadline_s` seconds have passed, or as soon as `proc`
    (when given) has exited; the message ends with `context()` (a log's tail, say). Exceptions of the
    `retry_on` types count as "not yet" (an object still being created answers with errors).
    """
    end = time.monotonic() + deadline_s
    last: Any = None
    while True:
        try:
            last = check()
        except WaitFailed:
            raise  # a nested wait that gave up is final, whatever `retry_on` says
        except retry_on as err:
            last = err
        else:
            if last:
                return last  # type: ignore[no-any-return]  # truthy, so not None: a T
        if proc is not None and proc.poll() is not None:
            problem = f"the process exited ({proc.returncode}) before {what}"
        elif time.monotonic() >= end:
            seen = f"; last: {last!r}" if last not in (None, False) else ""
            problem = f"timed out after {deadline_s:g} s waiting for {what}{seen}"[:3000]
        else:
            time.sleep(every)  # polling a condition, with a deadline
            continue
        raise WaitFailed(f"{problem}\n{context()}" if context else problem)


def stop_process(
    proc: subprocess.Popen[Any],
    timeout: float = 15.0,
    *,
    term_again: float | None = None,
    kill_timeout: float = 15.0,
) -> int:
    """Stop `proc`: SIGTERM, `timeout` seconds for it to exit, then SIGKILL. Returns its exit status.

    `term_again`: when it outlasts the first SIGTERM, send a second one and wait this long before the
    kill (a LiveKit worker drains on the first SIGTERM and exits at once on the second).
    """
    for wait_s in (timeout, term_again):
        if wait_s is None:
            continue
        if proc.poll() is not None:
            return proc.returncode
        proc.terminate()
        try:
            return proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            pass  # still running: the next signal
    proc.kill()
    return proc.wait(timeout=kill_timeout)
