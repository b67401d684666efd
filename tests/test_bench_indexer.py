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
    # The ceiling: each loop ran (bench/indexer.py checked that each stored all 800 events),
    # and the least wall time adds the senders loop's CPU, anvil's and the projection rows'.
    loops = re.findall(r"^ceiling, (raw|decoded|senders) +(\d+\.\d\d) +(\d+\.\d\d) +"
                       r"(\d+\.\d\d) +(\d+\.\d\d)x +(\d+\.\d\d)x$", out, re.MULTILINE)
    assert [m[0] for m in loops] == ["raw", "decoded", "senders"], out
    def close(printed: str, seconds: float) -> bool:  # printed = seconds / floor, both rounded
        slack = float(printed) * (0.0005 / floor + 0.005 / seconds) + 0.01
        return abs(float(printed) - seconds / floor) <= slack

    for _, secs, cpu, node_cpu, ratio, packed in loops:
        assert float(secs) > 0 and float(cpu) > 0
        assert close(ratio, float(secs)), (ratio, secs, floor)
        assert close(packed, (float(cpu) + float(node_cpu)) / cores), (packed, cpu, node_cpu)
    m = re.search(r"^least wall time for the SQLite index: the senders loop \(([\d.]+) \+ anvil "
                  r"([\d.]+) CPU s\) plus the projection rows it leaves out \(\d+ block [\d.]+, "
                  r"100 task [\d.]+, 100 task_miner [\d.]+, 100 payment [\d.]+: ([\d.]+) CPU s "
                  r"in plain sqlite3\) over \d+ cores never idle = ([\d.]+) s, ([\d.]+)x the "
                  r"floor: the 2\.5x target is (within reach|out of reach) on this machine$",
                  out, re.MULTILINE)  # fmt: skip
    assert m, out
    cpu, node_cpu, extra, bound, ratio = (float(m.group(i)) for i in range(1, 6))
    assert (cpu, node_cpu) == (float(loops[-1][2]), float(loops[-1][3]))
    assert abs(bound - (cpu + node_cpu + extra) / cores) <= 0.011
    assert (ratio <= 2.5) == (m.group(6) == "within reach")
