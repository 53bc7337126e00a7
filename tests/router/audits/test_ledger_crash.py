"""Durability: a writer killed with SIGKILL at random moments loses no acknowledged entry.

A child process appends entries in a loop (single appends, and batches through
``append_many``) and prints each entry's ``seq`` once ``append`` has returned.
The test reads a seeded random number of those acknowledgements, kills the
child with SIGKILL wherever it is, and reopens the file: every acknowledged
entry is there, every batch landed whole or not at all, the chain verifies, and
the next append continues it.  No sleeps: the kill moments are counted in
acknowledgements.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from meshcore_router.audits.ledger import EntryKind, Ledger, NewEntry

pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")]

WRITER = """
import sys
from meshcore_router.audits.ledger import EntryKind, Ledger, NewEntry

path, run = sys.argv[1], sys.argv[2]
ledger = Ledger.open(path)
i = 0
while True:
    size = 1 if i % 4 else 3
    batch = [
        NewEntry(EntryKind.CREDIT_ESCROW, float(i), f"n{i % 5}", f"{run}-{i}-{k}", 7 + k,
                 {"run": run, "batch": i, "size": size, "pad": "x" * (i % 200)}, f"{run}-{i}-{k}")
        for k in range(size)
    ]
    written = ledger.append(batch[0]) if size == 1 else ledger.append_many(batch)
    seqs = [written.seq] if size == 1 else [entry.seq for entry in written]
    print(" ".join(map(str, seqs)), flush=True)
    i += 1
"""

ROUNDS = 4


def env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[3] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}


def kill_after(path: Path, run: str, acknowledgements: int) -> set[int]:
    """Start a writer, let it acknowledge ``acknowledgements`` appends, SIGKILL it; every seq it acknowledged."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), run], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env()
    )
    assert child.stdout is not None
    lines = []
    try:
        for _ in range(acknowledgements):
            line = child.stdout.readline()
            assert line, child.stderr.read().decode() if child.stderr else "the writer died"
            lines.append(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    lines += rest.splitlines(keepends=True)
    complete = [line for line in lines if line.endswith(b"\n")]  # a line cut by the kill was never acknowledged
    return {int(seq) for line in complete for seq in line.split()}


def test_acknowledged_entries_survive_sigkill(tmp_path: Path) -> None:
    seed = int(os.environ.get("MESHCORE_TEST_SEED", "1729"))
    print(f"seed {seed} (set MESHCORE_TEST_SEED to change it)")
    rng = random.Random(seed)
    path = tmp_path / "ledger.db"
    acknowledged: set[int] = set()

    for run in range(ROUNDS):
        acknowledged |= kill_after(path, f"r{run}", rng.randint(1, 400))

        with Ledger.open(path) as ledger:
            count = ledger.verify()
            entries = list(ledger.entries())
            assert acknowledged <= {entry.seq for entry in entries}
            batches: dict[tuple[str, int], list[int]] = defaultdict(list)
            for entry in entries:
                payload = entry.payload
                batches[(payload["run"], payload["batch"])].append(payload["size"])
            assert all(len(sizes) == sizes[0] for sizes in batches.values()), "a batch landed in part"
            head = ledger.head()
            assert head is not None and head.seq == count
            after = ledger.append(
                NewEntry(EntryKind.RECEIPT, 0.0, "n0", payload={"run": "check", "batch": run, "size": 1})
            )
            assert (after.seq, after.prev_hash) == (count + 1, head.hash)
            acknowledged.add(after.seq)
            folded_escrow = sum(e.amount_micro for e in entries if e.kind is EntryKind.CREDIT_ESCROW)
            assert sum(b.escrow_micro for b in ledger.balances().values()) == folded_escrow
