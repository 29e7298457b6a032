"""The documents the collector writes, byte for byte, as the code of bb2d4b7 wrote them (issue 18, P2).

Speed work on shaping, pricing and the Elasticsearch bulk lines must not change a byte of the output. This test
shapes simulated pages of every stream (widths 1m/1h/1d, three ``group_by`` sets each, priced with the shipped
table and the simulator's, without and with display names, some rows changed: nulls, missing and unknown fields,
text to escape, zero and negative quantities, other Decimals), and digests each document's ``_id``, index,
``event.hash``, source JSON, the Decimal tuples (value and exponent) of its ``openai.<stream>`` measures, its
Elasticsearch bulk lines, the shaper's counts, and the cost and quantities reconciliation reads. ``GOLDEN`` is that
digest computed with the code of commit bb2d4b7 (before the P2 changes). A change that is meant to change the
output (or a change to the simulator's data) updates it, saying why in its commit.
"""

from __future__ import annotations

import hashlib
import random
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.helpers import CANARY_KEY, simulator_price_file
from usage_collector.catalogue import STREAMS
from usage_collector.documents import Names, Shaper, Target
from usage_collector.elastic.sink import ElasticsearchSink, bulk_lines
from usage_collector.estimate import PriceBook, cost_of, usage_estimate
from usage_collector.models import parse_page
from usage_collector.simulator import Organization, SimulatedAPI

DAY = 86400
NAMES = Names(projects={"proj_x": "X"}, api_keys={}, users={}, service_accounts={})
WEIRD = ['a"b\\c', "é\u2028x\x01", "", "12"]
#: The digest with the code of bb2d4b7 (see the module docstring).
GOLDEN = "bfb76ea0a6cedf4e6590c0e16681a3af93470780f1451e6f74f0c78b8d647659"


def _mutate(rng: random.Random, row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    key = rng.choice(list(row))
    r, value = rng.random(), row[key]
    if r < 0.2:
        row[key] = None
    elif r < 0.35:
        del row[key]
    elif r < 0.5 and isinstance(value, str):
        row[key] = rng.choice(WEIRD)
    elif r < 0.65 and type(value) is int:
        row[key] = rng.choice([0, -3, 2**40, 7])
    elif r < 0.75:
        row["new_measure_x"] = rng.choice([5, 2.5, {"a": 1, "b": {"c": 2}}, "text"])
    elif r < 0.85 and isinstance(value, Decimal):
        row[key] = rng.choice([Decimal("1.10"), Decimal("0E-7"), Decimal("-2.5"), Decimal("123456789.123456789")])
    elif r < 0.9 and isinstance(value, dict):
        row[key] = {k: (None if rng.random() < 0.5 else v) for k, v in value.items()}
    else:
        row[key] = None
    return row


def _digest(tmp: Path) -> tuple[str, int]:
    books = {"shipped": PriceBook(), "simulator": PriceBook(directory=simulator_price_file(tmp / "prices").parent)}
    total = hashlib.sha256()
    rng = random.Random(7)
    org = Organization(seed=7, start="2026-09-20", days=70)
    now = org.start + 69 * DAY + 7 * 3600
    api = SimulatedAPI(org, admin_key=CANARY_KEY, clock=lambda: now)
    count = 0
    for name, spec in STREAMS.items():
        widths = ("1d",) if spec.is_costs else ("1m", "1h") if name == "completions" else ("1h", "1d")
        for width in widths:
            some = tuple(g for g in spec.request_group_by if rng.random() < 0.5)
            for group_by in (tuple(spec.request_group_by), (), some):
                span = {"1m": 120 * 60, "1h": 20 * 3600, "1d": 6 * DAY}[width]
                start = now - 10 * DAY - rng.randrange(0, 40) * DAY
                start -= start % {"1m": 60, "1h": 3600, "1d": DAY}[width]
                params = [("start_time", str(start)), ("end_time", str(start + span)), ("bucket_width", width)]
                params += [("limit", str(spec.limit_max(width)))] + [("group_by[]", g) for g in group_by]
                status, _, body = api.handle(
                    "GET", "/v1/" + spec.path, params, {"Authorization": f"Bearer {CANARY_KEY}"}
                )
                assert status == 200, body[:300]
                for which, book in books.items():
                    for names in (None, NAMES):
                        page = parse_page(spec, body)
                        target = Target("org-g", 'G "Org"') if names is None else Target("org-g")
                        shaper = Shaper(spec, target, width, group_by, names, book.pricer(name, width))
                        h = hashlib.sha256()
                        docs = []
                        for b in page["data"]:
                            rows = b["results"]
                            if which == "simulator" and names is None:
                                rows = [_mutate(rng, r) if rng.random() < 0.15 else r for r in rows]
                            docs += shaper.bucket(b["start_time"], b["end_time"], rows)
                        for d in docs:
                            h.update(f"{d.id}|{d.index}|{d.stream}|{d.timestamp}|{d.hash}|".encode() + d.source_json)
                            own = d.source["openai"].get(name, {})
                            h.update(
                                repr(
                                    [(k, v.as_tuple() if isinstance(v, Decimal) else v) for k, v in own.items()]
                                ).encode()
                            )
                        for action in ElasticsearchSink._plan(docs, {}, {}):
                            line, source = bulk_lines(action)
                            h.update(bytes(line) + (source or b""))
                        h.update(
                            f"{shaper.unpriced} {sorted(shaper.new_fields)} {sorted(shaper.skipped_fields)}".encode()
                        )
                        if not spec.is_costs:
                            for d in docs[:200]:
                                own = {
                                    k: v for k, v in d.source["openai"].get(name, {}).items() if k != "estimated_cost"
                                }
                                model = d.source["openai"]["base"].get("model")
                                table = book.table(date.fromisoformat(d.source["@timestamp"][:10]))
                                if table is None:
                                    continue
                                cost = cost_of(name, own, model, width, table)
                                again, quantities = usage_estimate(name, own, model, width, table)
                                tuples = sorted((k, v.as_tuple()) for k, v in quantities.items())
                                h.update(repr((cost and cost.as_tuple(), again and again.as_tuple(), tuples)).encode())
                        total.update(h.digest())
                        count += len(docs)
    return total.hexdigest(), count


def test_documents_bulk_lines_and_costs_are_byte_identical_to_before(tmp_path):
    digest, count = _digest(tmp_path)
    assert count > 10000
    assert digest == GOLDEN
