"""One process at a time in a run directory: an exclusive `flock` on `<run>/run.lock`, held while the job runs.

The lock file records who holds it (pid, host, start time), so a refused process can say whom it waits for.  The
kernel drops a `flock` when its process ends, however it ends (`kill -9` included), so a lock file left behind by
a dead process is not stale: the next process simply takes the lock (and logs whose lock file it took over).  The
file stays in the run directory; only the lock on it counts.  (`flock` is POSIX: on a system without `fcntl`, or
a filesystem that refuses locks, the run goes on unlocked and the job says so.)
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
from pathlib import Path
from typing import Any

from ..errors import PruningError

LOCK_NAME = "run.lock"


class RunLockedError(PruningError):
    """Another process holds the run directory's lock (it names that process)."""


class RunLock:
    """`with RunLock(run_dir):` holds `run_dir/run.lock` exclusively, or raises RunLockedError without waiting."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None
        self.previous: dict[str, Any] = {}

    def acquire(self) -> "RunLock":
        """Take the lock now or raise RunLockedError naming the holder; the file is written only once held."""
        try:
            import fcntl
        except ImportError:  # not POSIX: run unlocked rather than not at all
            from .rundir import log

            log(f"this system has no fcntl: {self.path.parent} is not locked against a second process")
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = describe(read_holder(fd))
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):  # a filesystem without locks
                from .rundir import log

                log(f"cannot lock {self.path} ({exc.strerror}): the run is not locked against a second process")
                return self
            raise RunLockedError(f"{self.path.parent} is in use by {holder}: one process at a time may run it; "
                                 f"wait for that one to finish (or stop it), then resume") from None
        self.previous = read_holder(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_info()).encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (closing the file does; the kernel does it too if the process dies)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def holder_info() -> dict[str, Any]:
    """What the lock file records about the process holding it."""
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def read_holder(fd: int) -> dict[str, Any]:
    """The holder recorded in an open lock file ({} when empty or unreadable)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe(holder: dict[str, Any]) -> str:
    """'pid 123 on host h since 2026-11-23T16:00:00+00:00', or what is known of it."""
    if not holder:
        return "another process (its lock file records no details yet)"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('since', '?')}"
