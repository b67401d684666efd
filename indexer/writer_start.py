"""Starting the writer process (:mod:`indexer.writer_proc`) ahead of need.

Light on purpose (no database imports): ``corlens index`` starts the child before loading
anything else (:mod:`api.entry`), so that the child's imports run beside its own and the child
is ready when the first range is. The next :class:`~indexer.writer_proc.ProcessWriter` adopts
it.
"""

from __future__ import annotations

import os
import subprocess
import sys

_prestarted: list[subprocess.Popen[bytes]] = []


def in_process_only(database_url: str) -> bool:
    """An in-memory SQLite database is this process's alone: no writer process can reach it."""
    if not database_url.startswith("sqlite"):
        return False
    path = database_url.split("://", 1)[-1].split("?", 1)[0]  # sqlite:// is in memory too
    return path == "" or ":memory:" in path or "mode=memory" in database_url


def start_writer() -> subprocess.Popen[bytes]:
    """A new writer process, waiting for its database URL on its input.

    ``-P``: the working directory is not put on the child's import path, so an ``indexer``
    directory where corlens runs can neither shadow the package nor see the URL. Its own
    process group: Ctrl-C at a terminal reaches the parent only, which ends the child."""
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "indexer.writer_proc", str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        process_group=0,
    )


def prestart(database_url: str | None = None) -> None:
    """Start a writer process now for the next ProcessWriter, unless one waits already.

    Without a URL (the config is not read yet) one is started anyway; a later call with the
    URL of an in-memory database stops it, since no writer process could reach that. Unadopted,
    a writer process ends when this process does (its input closes)."""
    if database_url is not None and in_process_only(database_url):
        while _prestarted:  # it has not been told any URL: stopping it loses nothing
            proc = _prestarted.pop()
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        return
    if not _prestarted:
        _prestarted.append(start_writer())


def take_prestarted() -> subprocess.Popen[bytes] | None:
    return _prestarted.pop() if _prestarted else None
