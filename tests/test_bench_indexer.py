"""bench/indexer.py on a small chain: it runs, checks the index it measured, and prints every
figure, the CPU budget included. Speed is not asserted (benchmarks are not timed tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _port_open, unavailable

REPO = Path(__file__).resolve().parent.parent
SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def number(pattern: str, text: str) -> float:
    m = re.search(pattern, text, re.MULTILINE)
    assert m, f"{pattern!r} not in the output:\n{text}"
    return float(m.group(1).replace(",", ""))


@pytest.mark.usefixtures("anvil")  # skips (fails under CI) when anvil is missing
def test_indexer_bench_runs_and_prints_its_budget() -> None:
    if not _port_open("127.0.0.1", 5432):
        unavailable("PostgreSQL is not reachable at 127.0.0.1:5432")
    proc = subprocess.run(
        [sys.executable, "bench/indexer.py", "--events", "800", "--blocks", "60",
         "--pg-url", SERVER],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr + out
    assert "generated 800 events (100 tasks)" in out
    for backend in ("sqlite", "postgresql"):
        line = re.search(rf"^corlens index --once, {backend} .*$", out, re.MULTILINE)
        assert line, out
        assert re.search(r"\d+\.\d\dx \(\d+\.\d\dx\) <= \d\.\dx (MET|MISSED)", line.group(0))
        assert re.search(r"\d+ MB  < 300 MB (MET|MISSED) +\d+\.\d\d$", line.group(0))
    assert number(r"^the PostgreSQL server \(all its processes\) used ([\d.]+) CPU s", out) > 0
    cores = number(r"^CPU budget at the SQLite target: (\d+) cores", out)
    floor = number(r"^CPU budget .* 2\.5x the (\d+\.\d{3}) s floor", out)
    assert abs(floor - number(r"^floor, planner \(\d+ eth_getLogs\) +(\d+\.\d+)", out)) <= 0.005
    budget = number(r"^CPU budget .* floor = (\d+\.\d{3}) CPU s", out)
    assert floor > 0 and abs(budget - cores * 2.5 * floor) <= cores * 2.5 * 0.0005 + 0.001
    parts = re.findall(r"^(eth_getLogs|senders of|python start|sqlite3 inserts).* "
                       r"(\d+\.\d\d) +(\d+\.\d\d) +(\d+\.\d\d)  ", out, re.MULTILINE)  # fmt: skip
    assert [p[0] for p in parts] == ["eth_getLogs", "senders of", "python start",
                                     "sqlite3 inserts"], out  # fmt: skip
    assert number(r"^senders of (\d+) txs: \d+ x eth_get", out) > 0
    assert number(r"^python start .* (\d+\.\d\d)  $", out) > 0
    total = number(r"^sum +(\d+\.\d\d)  \d+% of the budget$", out)
    assert abs(total - sum(float(p[3]) for p in parts)) <= 0.03
    assert re.search(r"rows and CPU s: \d+ block [\d.]+, 800 event [\d.]+, 100 task [\d.]+, "
                     r"600 task_step [\d.]+, 100 task_miner [\d.]+, 100 payment [\d.]+$",
                     out, re.MULTILINE), out  # fmt: skip
    assert re.search(r"^PostgreSQL: \d+ x 3\.0x the floor = [\d.]+ CPU s; the same reads and "
                     r"start \([\d.]+\) and COPY of the same rows \(server [\d.]+, client "
                     r"[\d.]+\) = [\d.]+ CPU s, \d+% of it; left: -?[\d.]+ CPU s$",
                     out, re.MULTILINE), out  # fmt: skip
    left = number(r"^left for decoding, projections and the pipeline: (-?[\d.]+) CPU s", out)
    assert abs(left - (budget - total)) <= 0.011
    # The ceiling: each loop ran (bench/indexer.py checked that each stored all 800 events, or
    # handed them over when it stores nothing, and that the senders loops found the senders
    # corlens stored), and the least wall time adds the senders loop's CPU, anvil's and the
    # projection rows' inserts.
    loops = re.findall(r"^ceiling, (raw|decoded|senders|unstored) +(\d+\.\d\d) +(\d+\.\d\d) +"
                       r"(\d+\.\d\d) +(\d+\.\d\d)x +(\d+\.\d\d)x$", out, re.MULTILINE)
    assert [m[0] for m in loops] == ["raw", "decoded", "senders", "unstored"], out

    def agrees(printed: str, top: float, top_slack: float) -> bool:
        """``printed`` (2 decimals) is top / floor, each rounded as printed (the floor to 3
        decimals, ``top`` within ``top_slack``)."""
        low = (top - top_slack) / (floor + 0.0005) - 0.005
        high = (top + top_slack) / (floor - 0.0005) + 0.005
        return low <= float(printed) <= high

    for _, secs, cpu, node_cpu, ratio, packed in loops:
        assert float(secs) > 0 and float(cpu) > 0
        assert agrees(ratio, float(secs), 0.005), (ratio, secs, floor)
        both = (float(cpu) + float(node_cpu)) / cores
        assert agrees(packed, both, 0.01 / cores), (packed, cpu, node_cpu, floor)
    m = re.search(r"^least wall time for the SQLite index: the senders loop \(([\d.]+) \+ anvil "
                  r"([\d.]+) CPU s\) plus the projection rows it leaves out \(\d+ block ([\d.]+), "
                  r"100 task ([\d.]+), 100 task_miner ([\d.]+), 100 payment ([\d.]+): ([\d.]+) "
                  r"CPU s in plain sqlite3\) over \d+ cores never idle = ([\d.]+) s, ([\d.]+)x "
                  r"the floor: the 2\.5x target is (not ruled out|ruled out by this bound) on "
                  r"this machine$", out, re.MULTILINE)  # fmt: skip
    assert m, out
    cpu, node_cpu, *tables, extra, bound, ratio = (float(m.group(i)) for i in range(1, 10))
    assert (cpu, node_cpu) == (float(loops[2][2]), float(loops[2][3]))
    assert abs(extra - sum(tables)) <= 0.021  # four figures rounded to 2 decimals
    assert abs(bound - (cpu + node_cpu + extra) / cores) <= 0.011
    assert agrees(str(ratio), bound, 0.005), (ratio, bound, floor)
    assert (ratio <= 2.5) == (m.group(10) == "not ruled out")


def test_the_ceiling_reads_as_corlens_does() -> None:
    """bench/ceiling.py copies constants from corlens modules it must not import (they load
    SQLAlchemy): they must agree, or the ceiling would read other ranges or other senders."""
    from bench import ceiling
    from indexer.config import ChainConfig
    from indexer.prepare import RECEIPT_MAX_LOGS
    from indexer.sync import INITIAL_RANGE

    assert ceiling.RECEIPT_MAX_LOGS == RECEIPT_MAX_LOGS
    assert ceiling.INITIAL_RANGE == INITIAL_RANGE
    assert ceiling.MAX_BLOCK_RANGE == ChainConfig.model_fields["max_block_range"].default
