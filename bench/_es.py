"""The Elasticsearch test server (``tests/es_server.py``) in its own process, for the benchmarks.

Prints its URL on the first line and serves until its stdin closes. A separate process, so that a benchmark
measuring a child's peak RSS does not fork from a parent that holds the server's documents.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.es_server import EsServer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--version", default="9.1.0")
    a = p.parse_args()
    with EsServer(a.version) as server:
        print(server.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
