"""Display names added to shaped documents just before they are written (``collector._NamesLater``).

A stream shapes its first page without waiting for the Admin lists and adds the names before its first write; the
documents must be the ones a ``Shaper`` given the names builds, byte for byte (key order included), on every row
of a simulated organization's pages, through the fast row functions and the general one.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from tests.helpers import CANARY_KEY, T0, make_settings
from tests.test_collector import H, ScriptedAPI
from tests.test_fast_path import TARGET, _rows, _same, pages  # noqa: F401  (pages: a fixture)
from usage_collector import collector as collector_module
from usage_collector.catalogue import STREAMS
from usage_collector.clock import FakeClock
from usage_collector.collector import Collector, _NamesLater
from usage_collector.documents import Document, Names, Shaper, _iso
from usage_collector.errors import AuthError

NAMED = ("project_name", "api_key_name", "user_email", "service_account_name")


def _names_of(rows: list[dict[str, Any]]) -> Names:
    """Names for the IDs of ``rows``: every project and key, every other user as a user and the others as
    service accounts, one user as both (both names are added)."""
    projects = {r["project_id"]: f"Project {r['project_id']}" for r in rows if r.get("project_id")}
    keys = {r["api_key_id"]: f"Key {r['api_key_id']}" for r in rows if r.get("api_key_id")}
    user_ids = sorted({r["user_id"] for r in rows if r.get("user_id")})
    users = {u: f"{u}@example.com" for u in user_ids[::2]}
    accounts = {u: f"Service {u}" for u in user_ids[1::2]}
    if user_ids:
        accounts[user_ids[0]] = f"Service {user_ids[0]}"
    return Names(projects, keys, users, accounts)


def test_names_added_before_the_write_equal_names_added_while_shaping_on_every_simulated_row(pages):  # noqa: F811
    counts = dict.fromkeys(NAMED, 0)
    rows = 0
    for (name, width), parsed in pages.items():
        spec = STREAMS[name]
        names = _names_of([r for p in parsed for _, _, r in _rows(p)])
        with_names = Shaper(spec, TARGET, width, spec.request_group_by, names)
        without = Shaper(spec, TARGET, width, spec.request_group_by, None)
        general = Shaper(spec, TARGET, width, spec.request_group_by, None)
        later = _NamesLater(lambda names=names: names)  # a function, as the collector passes it
        for page in parsed:
            for b in page["data"]:
                start, ts, te = b["start_time"], _iso(b["start_time"]), _iso(b["end_time"])
                want = with_names.bucket(start, b["end_time"], b["results"])
                got = without.bucket(start, b["end_time"], b["results"])  # the fast row functions
                slow = [general._row(start, ts, te, r) for r in b["results"]]  # the general one
                later.add(got)
                later.add(slow)
                for w, g, s in zip(want, got, slow, strict=True):
                    _same(g, w)
                    _same(s, w)
                    rows += 1
                    for field in NAMED:
                        counts[field] += field in w.source["openai"]["base"]
    assert rows > 5000 and all(counts.values()), (rows, counts)


def test_names_later_waits_once_only_for_documents_and_raises_the_fetchs_error():
    calls: list[int] = []

    def source() -> Names:
        calls.append(1)
        return Names(projects={"p": "P"})

    later = _NamesLater(source)
    later.add([])  # nothing to write: not waited for
    assert calls == []
    doc = Document("i", "x", "s", 0, "h", {"openai": {"base": {"project_id": "p"}}})
    later.add([doc])
    later.add([Document("j", "x", "s", 0, "h", {"openai": {"base": {"project_id": "q"}}})])
    assert calls == [1] and doc.source["openai"]["base"] == {"project_id": "p", "project_name": "P"}

    def refused() -> Names:
        raise AuthError("HTTP 401", status_code=401)

    with pytest.raises(AuthError):
        _NamesLater(refused).add([doc])
    _NamesLater(None).add([doc])  # names off: left as they are
    assert doc.source["openai"]["base"] == {"project_id": "p", "project_name": "P"}


def test_a_stream_shapes_its_first_page_before_the_names_are_in(sink, monkeypatch):
    """The projects list answers only once a stream has shaped a bucket (it would wait 5 s, then fail the test,
    if shaping waited for the names, as it did); the documents written still carry the project's name."""
    shaped = threading.Event()

    class Watched(Shaper):
        def bucket(self, start: int, end: int, results: list[Any]) -> list[Document]:
            out = super().bucket(start, end, results)
            shaped.set()
            return out

    monkeypatch.setattr(collector_module, "Shaper", Watched)
    clock = FakeClock(T0 + 10 * H + 20 * 60)
    api = ScriptedAPI(clock, lambda s, t: 2)
    waited: list[bool] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {CANARY_KEY}"
        path = request.url.path
        if "/organization/usage/" in path or path.endswith("/organization/costs"):
            return api(request)
        if path.endswith("/organization/projects"):
            waited.append(shaped.wait(5))
            return httpx.Response(200, json={"object": "list", "data": [{"id": "proj_1", "name": "Support"}]})
        return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})

    s = make_settings(streams=["embeddings"], initial_lookback="1d", enrich_names=True, concurrency=1)
    result = Collector(s, sink, clock=clock, transport=httpx.MockTransport(handler)).run_cycle()
    assert not result.failed, [r.error for r in result.failed]
    assert waited == [True]
    docs = list(sink.iter_documents("embeddings"))
    assert docs and all(d["_source"]["openai"]["base"]["project_name"] == "Support" for d in docs)
