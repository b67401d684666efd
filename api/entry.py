"""The ``corlens`` console script: starts ``corlens index``'s writer process first.

``corlens index`` writes through a child process (:mod:`indexer.writer_proc`) that takes about
as long to import as the command line itself. Started here, before the command line's own
imports, the child imports beside them and is ready by the time the first range is fetched
(started after them, it was ready a second into a backfill, and the first ranges were written
by the indexer itself meanwhile). The child waits for its database URL: ``index`` sends it once
the config is read, or stops the child when the database is in memory (no other process could
reach it); only the ``index`` command is loaded then. Every other command goes straight to
:mod:`api.cli`.
"""

from __future__ import annotations

import sys

# Set for `corlens index`: api.cli then leaves out the commands defined elsewhere (audit,
# verify, the gateway's), whose imports would delay the first request by a tenth of a second.
INDEX_ONLY = False


def main() -> None:
    global INDEX_ONLY
    args = sys.argv[1:]
    if args[:1] == ["index"] and "--help" not in args:
        from indexer.writer_start import prestart

        prestart()
        INDEX_ONLY = True
    from api.cli import main as cli_main

    cli_main()


if __name__ == "__main__":  # python -m api.entry: run as the module api.cli reads the flag of
    from api import entry

    entry.main()
