"""Admin list endpoints: envelopes, limit/after pagination, archived projects (ref §3, §4.17)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest


def _walk_list(
    call: Callable[..., Any], path: str, params: Sequence[tuple[str, Any]] = (), limit: int = 2
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(50):
        reply = call(path, [*params, ("limit", limit), *([("after", after)] if after else [])])
        assert reply.status == 200, reply.body
        body = reply.json
        assert body["object"] == "list"
        if body["data"]:
            assert body["first_id"] == body["data"][0]["id"] and body["last_id"] == body["data"][-1]["id"]
        items += body["data"]
        if not body["has_more"]:
            return items
        after = body["last_id"]
    raise AssertionError("list pagination did not end")


@pytest.mark.parametrize(
    ("include_archived", "expected"),
    [(None, 4), ("false", 4), ("true", 5)],
    ids=["default-hides-archived", "explicit-false", "include-archived"],
)
def test_projects_list_pagination_and_archived(call, org, include_archived, expected):
    params = [("include_archived", include_archived)] if include_archived else []
    projects = _walk_list(call, "/v1/organization/projects", params)
    assert len(projects) == expected
    assert len({p["id"] for p in projects}) == expected
    archived = [p for p in projects if p["status"] == "archived"]
    if include_archived == "true":
        (legacy,) = archived
        assert legacy["archived_at"] == org.project("legacy").archived_at
    else:
        assert not archived


def test_users_list(call, org):
    users = _walk_list(call, "/v1/organization/users", limit=4)
    assert [u["id"] for u in users] == [u.id for u in org.users]
    assert all(u["object"] == "organization.user" and u["role"] in ("owner", "reader") for u in users)


@pytest.mark.parametrize(
    ("access", "expect_inactive"),
    [(None, False), ("active", False), ("any", True), ("inactive", True)],
    ids=["default-visibility", "active", "any", "inactive"],
)
def test_project_api_keys_visibility(call, org, access, expect_inactive):
    rag = org.project("rag").id
    params = [("owner_project_access", access)] if access else []
    keys = _walk_list(call, f"/v1/organization/projects/{rag}/api_keys", params, limit=1)
    names = {k["name"] for k in keys}
    assert ("edsger-old" in names) == expect_inactive
    for k in keys:
        assert k["object"] == "organization.project.api_key"
        owner = k["owner"]
        assert owner[owner["type"]]["id"]


def test_api_key_owners_are_users_or_service_accounts(call, org):
    support = org.project("support").id
    keys = _walk_list(call, f"/v1/organization/projects/{support}/api_keys", limit=10)
    assert {k["owner"]["type"] for k in keys} == {"user", "service_account"}
    unused = next(k for k in keys if k["name"] == "ci-smoke-test")
    assert unused["last_used_at"] is None


def test_service_accounts_list(call, org):
    rag = org.project("rag").id
    accounts = _walk_list(call, f"/v1/organization/projects/{rag}/service_accounts")
    assert [a["name"] for a in accounts] == ["rag-indexer"]


@pytest.mark.parametrize("sub", ["service_accounts", "users"])
def test_archived_project_sub_lists_are_400(call, org, sub):
    reply = call(f"/v1/organization/projects/{org.project('legacy').id}/{sub}")
    assert reply.status == 400
    assert set(reply.json["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/v1/organization/projects/proj_nope/api_keys", [], 404),
        ("/v1/organization/projects", [("limit", 0)], 400),
        ("/v1/organization/projects", [("limit", 101)], 400),
        ("/v1/organization/users", [("after", "user-nope")], 400),
    ],
    ids=["unknown-project", "limit-zero", "limit-over-100", "unknown-after"],
)
def test_admin_list_errors(call, path, params, status):
    assert call(path, params).status == status


def test_usage_ids_join_to_admin_lists(call, org):
    # ref §3 join keys: usage project_id/api_key_id/user_id <-> admin list ids
    data = call(
        "completions",
        [
            ("start_time", org.start),
            ("end_time", org.end),
            ("limit", 31),
            ("group_by", "project_id,api_key_id,user_id"),
        ],
    ).json["data"]
    used = {(r["project_id"], r["api_key_id"], r["user_id"]) for b in data for r in b["results"]}
    projects = {p["id"] for p in _walk_list(call, "/v1/organization/projects", [("include_archived", "true")], 10)}
    for project_id, key_id, user_id in used:
        assert project_id in projects
        keys = _walk_list(call, f"/v1/organization/projects/{project_id}/api_keys", [("owner_project_access", "any")])
        key = next(k for k in keys if k["id"] == key_id)
        assert key["owner"][key["owner"]["type"]]["id"] == user_id
