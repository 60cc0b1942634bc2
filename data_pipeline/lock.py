"""One process per output folder: an exclusive, non-blocking flock on `<output.dir>/.lock`.

Two runs on one folder would send every request twice and interleave the journal, so the second fails at once
with a message naming the holder. The kernel drops a flock when its process dies (even by SIGKILL), so a lock
left by a killed run never blocks the next one; the pid written in the file only serves the message.
flock works between processes of one machine; shards on different machines need their own folders.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from data_pipeline.config import ConfigError

LOCK = ".lock"


class FolderLock:
    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK
        self._fd: int | None = None

    def __enter__(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise ConfigError(f"output folder {self.path.parent} is in use by another curate run ({holder}); "
                              "wait for it to finish, or give this run another output.dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                      .encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
