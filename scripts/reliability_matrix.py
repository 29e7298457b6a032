#!/usr/bin/env python3
"""Run the reliability matrix (``tests/reliability``) and print its table: scenario, runs, exact, failed.

    python scripts/reliability_matrix.py                 # run it, print the table, the runtime, failing tests
    python scripts/reliability_matrix.py --write-docs    # ... and put the table into docs/reliability.md
    python scripts/reliability_matrix.py --mutants       # does the matrix catch known-wrong collectors?

``--mutants`` copies the committed tree (``git archive HEAD``) to a temporary directory, breaks one thing at a
time there (a checkpoint stored before its documents, no repair of a cut NDJSON line, ...), runs the part of
the matrix (or the sink unit tests, for what happens inside one write) that must notice, and reports DETECTED
or MISSED per mutant. The working tree is never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"

#: name -> (file, text, replacement, pytest selection: a test file and ``-k``)
MUTANTS: dict[str, tuple[str, str, str, str]] = {
    "duckdb: checkpoint committed before the documents": (
        "usage_collector/sinks/duckdb.py",
        "            for i in range(0, len(docs), size):\n",
        "            if checkpoint is not None and state is not None:\n"
        "                self._put_checkpoint(con, checkpoint, state)\n"
        "            con.execute('COMMIT')\n            con.execute('BEGIN TRANSACTION')\n"
        "            for i in range(0, len(docs), size):\n",
        "tests/test_sinks.py -k duckdb_failed_window",
    ),
    "ndjson: checkpoint stored before the lines": (
        "usage_collector/sinks/ndjson.py",
        "            try:\n                self._index()\n",
        "            if checkpoint is not None:\n                self.save_checkpoint(checkpoint)\n"
        "            try:\n                self._index()\n",
        "tests/test_sinks.py -k ndjson_failed_append",
    ),
    "ndjson: a cut last line is not repaired": (
        "usage_collector/sinks/ndjson.py",
        "    def _repair_tail(self) -> None:\n",
        "    def _repair_tail(self) -> None:\n        return\n",
        "tests/test_sinks.py -k partial_last_line",
    ),
    "collector: an interrupted backfill resumes one bucket late": (
        "usage_collector/planning.py",
        "Window(min(stored.position, end), end)",
        "Window(min(stored.position + 3600, end), end)",
        "tests/reliability/test_crash.py -k 'window.shaped:2 or window.written:7'",
    ),
    "lease: a holder killed with -9 is never taken over": (
        "usage_collector/sinks/filelease.py",
        '    """``host:pid:suffix`` on this host whose process is gone (a run killed with ``kill -9``)."""\n',
        '    """``host:pid:suffix`` on this host whose process is gone (a run killed with ``kill -9``)."""\n'
        "    return False\n",
        "tests/reliability/test_crash.py -k window.written:11",
    ),
    "client: Retry-After ignored": (
        "usage_collector/client.py",
        "            return exc.retry_after\n",
        "            return 0.5\n",
        "tests/reliability/test_api_faults.py -k 'storm and seconds'",
    ),
    "client: has_more without next_page taken as the last page": (
        "usage_collector/client.py",
        '                    raise PaginationError(f"{spec.name}: has_more is true but next_page is missing',
        '                    return\n                    raise PaginationError(f"{spec.name}: has_more is true but '
        "next_page is missing",
        "tests/reliability/test_api_faults.py -k has_more",
    ),
    "duckdb: a revised document is kept at its old value": (
        "usage_collector/sinks/duckdb.py",
        "            elif prev != doc.hash:\n                changed.append(i)",
        "            elif prev != doc.hash:\n                stats.unchanged += 1",
        "tests/reliability/test_revisions.py -k cron",
    ),
    "ndjson: a failed append is left in the file": (
        "usage_collector/sinks/ndjson.py",
        "                    os.truncate(self.path, size)\n",
        "                    pass\n",
        "tests/test_sinks.py -k ndjson_failed_append",
    ),
}


def run_matrix(extra: list[str]) -> tuple[list[dict[str, Any]], float, int, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        rows_path, junit = Path(tmp) / "matrix.json", Path(tmp) / "junit.xml"
        env = {**os.environ, "RELIABILITY_MATRIX_JSON": str(rows_path)}
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "tests/reliability",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            *extra,
        ]
        t0 = time.monotonic()
        code = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        seconds = time.monotonic() - t0
        rows = json.loads(rows_path.read_text()) if rows_path.exists() else []
        failing = []
        if junit.exists():
            for case in ET.parse(junit).iter("testcase"):
                if case.find("failure") is not None or case.find("error") is not None:
                    failing.append(f"{case.get('classname', '').rsplit('.', 1)[-1]}.py::{case.get('name')}")
    return rows, seconds, code, failing


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| scenario | runs | exact | failed |", "|---|---:|---:|---:|"]
    for r in rows:
        failed = f"{r['failed']} ({', '.join(r['failures'])})" if r["failed"] else "0"
        lines.append(f"| {r['scenario']} | {r['runs']} | {r['exact']} | {failed} |")
    lines.append(
        f"| **total** | **{sum(r['runs'] for r in rows)}** | **{sum(r['exact'] for r in rows)}** | "
        f"**{sum(r['failed'] for r in rows)}** |"
    )
    return "\n".join(lines)


def block(rows: list[dict[str, Any]], seconds: float, failing: list[str]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    out = [
        f"Produced by `python scripts/reliability_matrix.py --write-docs` at commit `{commit}`, {when}, on "
        f"{os.cpu_count()} CPU(s): the matrix ran in **{seconds:.0f} s** (pytest wall time of "
        "`tests/reliability`).",
        "",
        table(rows),
        "",
    ]
    if failing:
        out += ["Tests failing at that commit (each one shows a collector bug, see below):", ""]
        out += [f"- `{t}`" for t in failing]
        out.append("")
    return "\n".join(out)


def write_docs(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC}: markers {BEGIN} / {END} not found")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def mutants() -> int:
    missed = 0
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        env = {**os.environ, "PYTHONPATH": tmp}  # the mutated package wins over the installed one
        for name, (rel, old, new, selection) in MUTANTS.items():
            path = Path(tmp) / rel
            original = path.read_text()
            if old not in original:
                # a pattern the code no longer holds checks nothing: it fails the run until it is updated
                print(f"{name}: SKIPPED (the code it mutates has changed; update its pattern)")
                missed += 1
                continue
            path.write_text(original.replace(old, new, 1))
            try:
                cmd = f"{sys.executable} -m pytest {selection} -q -x -p no:cacheprovider"
                res = subprocess.run(cmd, shell=True, cwd=tmp, env=env, capture_output=True, text=True)
                summary = (res.stdout.strip().splitlines() or ["?"])[-1]
                detected = res.returncode != 0 and re.search(r"\d+ failed", summary)
                missed += not detected
                print(f"{name}: {'DETECTED' if detected else 'MISSED'} ({summary})")
            finally:
                path.write_text(original)
    return 1 if missed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-docs", action="store_true", help="put the table into docs/reliability.md")
    parser.add_argument("--mutants", action="store_true", help="check that the matrix catches known-wrong code")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    if args.mutants:
        return mutants()
    rows, seconds, code, failing = run_matrix(args.pytest_args)
    text = block(rows, seconds, failing)
    print("\n" + text)
    if args.write_docs:
        write_docs(text)
        print(f"written to {DOC.relative_to(ROOT)}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
