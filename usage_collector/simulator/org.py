"""The simulated OpenAI organization: projects, users, service accounts, API keys, vector stores, and the series
of traffic they produce.

Everything is a pure function of ``(seed, start date, days)``. Nothing outside ``[start, start + days)`` has usage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal, TypedDict

from .rand import hash_key, ident
from .streams import STREAMS, WIDTH_SECONDS
from .traffic import Profile, Series
from .truth import TruthEngine

DAY = 86400
HOUR = 3600


class Bucket(TypedDict):
    """A time bucket of truth values (same fields as the API's ``bucket`` minus ``object``)."""

    start_time: int
    end_time: int
    results: list[dict[str, Any]]


@dataclass(frozen=True)
class Project:
    """A project (ref openai-usage-api.md §3 *Project*)."""

    id: str
    name: str
    created_at: int
    archived_at: int | None = None

    @property
    def status(self) -> str:
        """``active`` or ``archived``."""
        return "archived" if self.archived_at is not None else "active"

    def to_api(self) -> dict[str, Any]:
        """The ``organization.project`` object."""
        return {
            "id": self.id,
            "object": "organization.project",
            "name": self.name,
            "created_at": self.created_at,
            "archived_at": self.archived_at,
            "status": self.status,
        }


@dataclass(frozen=True)
class User:
    """An organization member (ref §3 *User*); ``projects`` maps project id to project role."""

    id: str
    name: str
    email: str
    role: Literal["owner", "reader"]
    added_at: int
    projects: tuple[tuple[str, str], ...] = ()

    def to_api(self) -> dict[str, Any]:
        """The ``organization.user`` object."""
        return {
            "object": "organization.user",
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "role": self.role,
            "added_at": self.added_at,
        }


@dataclass(frozen=True)
class ServiceAccount:
    """A project service account (ref §3 *ProjectServiceAccount*)."""

    id: str
    name: str
    project_id: str
    role: Literal["owner", "member"]
    created_at: int

    def to_api(self) -> dict[str, Any]:
        """The ``organization.project.service_account`` object."""
        return {
            "object": "organization.project.service_account",
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class ApiKey:
    """A project API key owned by a user or a service account (ref §3 *ProjectApiKey*).

    ``owner_project_access`` ``inactive`` keys are hidden from the default key listing (ref §4.17).
    """

    id: str
    name: str
    project_id: str
    owner_type: Literal["user", "service_account"]
    owner_id: str
    created_at: int
    last_used_at: int | None
    owner_project_access: Literal["active", "inactive"]
    redacted_value: str


@dataclass(frozen=True)
class VectorStore:
    """A vector store of a project (its ``vs_`` id appears as ``vector_store_id`` in file search usage)."""

    id: str
    name: str
    project_id: str


def _to_day(start: date | datetime | str | int) -> int:
    if isinstance(start, bool):
        raise TypeError("start must be a date, an ISO date string or unix seconds")
    if isinstance(start, int):
        return start - start % DAY
    if isinstance(start, str):
        start = date.fromisoformat(start[:10])
    if isinstance(start, datetime):
        start = start.astimezone(UTC).date() if start.tzinfo else start.date()
    return int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp())


# --- The organization chart -----------------------------------------------------------------------------------------

# (slug, name, created days before start)
_PROJECTS = (
    ("default", "Default project", 400),
    ("support", "Support Copilot", 200),
    ("rag", "Search & RAG", 150),
    ("studio", "Creative Studio", 90),
    ("legacy", "Legacy Chatbot", 600),  # archived half-way through the window
)
# (slug, name, org role, {project slug: project role})
_USERS: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    ("ada", "Ada Lovelace", "owner", {"default": "owner", "studio": "owner", "legacy": "owner"}),
    ("grace", "Grace Hopper", "owner", {"support": "owner", "default": "member"}),
    ("alan", "Alan Turing", "reader", {"default": "member"}),
    ("katherine", "Katherine Johnson", "reader", {"rag": "owner"}),
    ("edsger", "Edsger Dijkstra", "reader", {}),  # left the rag project: his key is "inactive"
    ("barbara", "Barbara Liskov", "reader", {"studio": "member", "rag": "member"}),
)
# (slug, name, project slug, role)
_SERVICE_ACCOUNTS = (
    ("support-bot", "support-bot", "support", "member"),
    ("rag-indexer", "rag-indexer", "rag", "member"),
    ("legacy-bot", "legacy-bot", "legacy", "owner"),
)
# (slug, name, project slug, owner kind, owner slug, owner_project_access)
_KEYS = (
    ("ada-dev", "ada-dev", "default", "user", "ada", "active"),
    ("alan-notebook", "alan-notebook", "default", "user", "alan", "active"),
    ("support-prod", "support-prod", "support", "service_account", "support-bot", "active"),
    ("grace-dev", "grace-dev", "support", "user", "grace", "active"),
    ("rag-indexer", "rag-indexer", "rag", "service_account", "rag-indexer", "active"),
    ("katherine-eval", "katherine-eval", "rag", "user", "katherine", "active"),
    ("edsger-old", "edsger-old", "rag", "user", "edsger", "inactive"),
    ("studio-web", "studio-web", "studio", "user", "barbara", "active"),
    ("studio-batch", "studio-batch", "studio", "user", "ada", "active"),
    ("legacy-prod", "legacy-prod", "legacy", "service_account", "legacy-bot", "active"),
    ("unused", "ci-smoke-test", "support", "user", "grace", "active"),  # never used: last_used_at null
)
# (slug, name, project slug)
_VECTOR_STORES = (
    ("kb", "support knowledge base", "support"),
    ("docs", "product docs", "rag"),
    ("tickets", "resolved tickets", "rag"),
)

#: ``api_source`` values (ref-11): attributed Agents API activity, and everything else.
AGENTS, UNL = "agents_api", "unlabeled"
GPT4O = "gpt-4o-2024-08-06"
AUDIO = "gpt-4o-audio-preview-2024-12-17"
MINI = "gpt-4o-mini-2024-07-18"
O3M = "o3-mini-2025-01-31"

# Series tables: (key slug, extra dims, profile, shape). The key fixes project and user.
_COMPLETIONS: tuple[tuple[str, dict[str, Any], Profile, int], ...] = (
    ("ada-dev", {"model": GPT4O, "batch": False, "service_tier": "default", "api_source": UNL},
     Profile(40, tz=1, size=1800, out=350, cached=0.35, cache_write=0.05), 3),
    ("ada-dev", {"model": MINI, "batch": True, "service_tier": "default", "api_source": UNL},
     Profile(3, diurnal=0.2, weekend=1.0, size=1200, out=200, spikes=0.15), 3),
    ("alan-notebook", {"model": O3M, "batch": False, "service_tier": "flex", "api_source": UNL},
     Profile(6, tz=0, size=2500, out=1500, cached=0.2), 2),
    ("alan-notebook", {"model": "gpt-4.1-2025-04-14", "batch": False, "service_tier": "default", "api_source": UNL},
     Profile(4, tz=0, size=3000, out=600, cached=0.25, cache_write=0.08), 3),
    ("support-prod", {"model": MINI, "batch": False, "service_tier": "default", "api_source": AGENTS},
     Profile(400, tz=-5, diurnal=0.7, weekend=0.5, size=900, out=180, cached=0.55, cache_write=0.03), 3),
    ("support-prod", {"model": GPT4O, "batch": False, "service_tier": "priority", "api_source": UNL},
     Profile(30, tz=-5, size=1500, out=250, cached=0.4), 3),
    ("support-prod", {"model": MINI, "batch": False, "service_tier": "scale", "api_source": UNL},
     Profile(120, tz=-5, diurnal=0.6, size=800, out=150, cached=0.5), 3),
    ("grace-dev", {"model": AUDIO, "batch": False, "service_tier": "default", "api_source": UNL},
     Profile(5, tz=-5, size=1200, out=400, cached=0.1, audio=0.6, out_audio=0.7), 2),
    ("rag-indexer", {"model": MINI, "batch": True, "service_tier": "default", "api_source": UNL},
     Profile(25, diurnal=0.1, weekend=1.0, size=4000, out=300, spikes=0.2), 3),
    ("katherine-eval", {"model": O3M, "batch": False, "service_tier": "default", "api_source": AGENTS},
     Profile(8, tz=2, size=2200, out=1800, cached=0.15), 3),
    ("katherine-eval", {"model": GPT4O, "batch": False, "service_tier": "default", "api_source": UNL},
     Profile(6, tz=2, size=2500, out=300, cached=0.2, image=0.35), 3),
    ("edsger-old", {"model": MINI, "batch": False, "service_tier": "default", "api_source": UNL},
     Profile(1.5, tz=1, size=700, out=200), 3),
    ("studio-web", {"model": GPT4O, "batch": False, "service_tier": "default", "api_source": AGENTS},
     Profile(15, tz=-8, size=1500, out=300, cached=0.2, image=0.5), 3),
    ("studio-web", {"model": "gpt-image-1", "batch": False, "service_tier": "default", "api_source": UNL},
     Profile(4, tz=-8, size=300, out=4000, out_image=0.95, image=0.3), 3),
    ("legacy-prod", {"model": "gpt-3.5-turbo-0125", "batch": False, "service_tier": "default", "api_source": UNL},
     Profile(60, tz=-5, diurnal=0.5, size=600, out=150, cached=0.1), 0),
    ("legacy-prod", {"model": MINI, "batch": False, "service_tier": "default", "api_source": UNL},
     Profile(20, tz=-5, diurnal=0.5, size=700, out=160, cached=0.3), 1),
)  # fmt: skip
# Decisions (ref-11 "New endpoint"): measures and dimensions as completions.
_DECISIONS: tuple[tuple[str, dict[str, Any], Profile, int], ...] = (
    ("support-prod", {"model": MINI, "batch": False, "service_tier": "default", "api_source": AGENTS},
     Profile(60, tz=-5, diurnal=0.7, size=500, out=40, cached=0.4, cache_write=0.06, cache_12h=0.5), 3),
    ("ada-dev", {"model": GPT4O, "batch": False, "service_tier": "default", "api_source": UNL},
     Profile(5, tz=1, size=900, out=60, cached=0.2, cache_write=0.1), 3),
    ("rag-indexer", {"model": MINI, "batch": True, "service_tier": "default", "api_source": UNL},
     Profile(8, diurnal=0.1, weekend=1.0, size=700, out=30), 2),
)  # fmt: skip
_EMBEDDINGS = (
    ("rag-indexer", {"model": "text-embedding-3-large"}, Profile(80, diurnal=0.2, weekend=0.9, size=600, spikes=0.2)),
    ("katherine-eval", {"model": "text-embedding-3-small"}, Profile(10, tz=2, size=300)),
    ("ada-dev", {"model": "text-embedding-3-small"}, Profile(4, tz=1, size=250)),
    ("support-prod", {"model": "text-embedding-3-small"}, Profile(150, tz=-5, size=120)),
    ("legacy-prod", {"model": "text-embedding-ada-002-v2"}, Profile(30, tz=-5, size=200)),
)  # fmt: skip
_MODERATIONS = (
    ("support-prod", {"model": "omni-moderation-latest"}, Profile(300, tz=-5, size=150)),
    ("studio-web", {"model": "omni-moderation-latest"}, Profile(12, tz=-8, size=60)),
    ("legacy-prod", {"model": "text-moderation-latest"}, Profile(40, tz=-5, size=120)),
)  # fmt: skip
_IMAGES = (
    ("studio-web", {"model": "gpt-image-1", "size": "1024x1024", "source": "image.generation"},
     Profile(12, tz=-8, per_call=1.6)),
    ("studio-web", {"model": "gpt-image-1", "size": "1536x1024", "source": "image.generation"},
     Profile(5, tz=-8, per_call=1.2)),
    ("studio-web", {"model": "gpt-image-1", "size": "1024x1024", "source": "image.edit"},
     Profile(6, tz=-8, per_call=1.0)),
    ("studio-batch", {"model": "dall-e-3", "size": "1024x1792", "source": "image.generation"},
     Profile(2, diurnal=0.1, weekend=1.0, spikes=0.3)),
    ("studio-batch", {"model": "dall-e-3", "size": "1024x1024", "source": "image.generation"},
     Profile(3, diurnal=0.1, weekend=1.0)),
    ("ada-dev", {"model": "dall-e-2", "size": "512x512", "source": "image.variation"},
     Profile(0.6, tz=1, per_call=3.0)),
    ("ada-dev", {"model": "dall-e-2", "size": "256x256", "source": "image.variation"},
     Profile(0.4, tz=1, per_call=4.0)),
)  # fmt: skip
_SPEECHES = (
    ("support-prod", {"model": "tts-1"}, Profile(50, tz=-5, size=180)),
    ("grace-dev", {"model": "gpt-4o-mini-tts"}, Profile(3, tz=-5, size=400)),
    ("studio-web", {"model": "tts-1-hd"}, Profile(2, tz=-8, size=1200)),
)  # fmt: skip
_TRANSCRIPTIONS = (
    ("support-prod", {"model": "whisper-1"}, Profile(40, tz=-5, size=45)),
    ("grace-dev", {"model": "gpt-4o-transcribe"}, Profile(3, tz=-5, size=120)),
    ("alan-notebook", {"model": "whisper-1"}, Profile(0.8, tz=0, size=600)),
)  # fmt: skip
_FILE_SEARCH = (
    ("support-prod", {"vector_store": "kb"}, Profile(90, tz=-5)),
    ("rag-indexer", {"vector_store": "docs"}, Profile(20, diurnal=0.3, weekend=0.9)),
    ("katherine-eval", {"vector_store": "docs"}, Profile(6, tz=2)),
    ("katherine-eval", {"vector_store": "tickets"}, Profile(3, tz=2)),
)  # fmt: skip
_WEB_SEARCH = (
    ("support-prod", {"model": MINI, "context_level": "medium", "api_source": AGENTS},
     Profile(25, tz=-5, per_call=1.3)),
    ("katherine-eval", {"model": GPT4O, "context_level": "high", "api_source": UNL},
     Profile(4, tz=2, per_call=2.5)),
    ("ada-dev", {"model": MINI, "context_level": "low", "api_source": UNL}, Profile(3, tz=1, per_call=1.1)),
    ("ada-dev", {"model": GPT4O, "context_level": "medium", "api_source": AGENTS},
     Profile(2, tz=1, per_call=1.8)),
)  # fmt: skip
_CODE_INTERPRETER = (
    ("default", Profile(3, tz=1)),
    ("rag", Profile(2, tz=2)),
    ("studio", Profile(1, tz=-8)),
)  # fmt: skip
# Vector store gauge per project: initial bytes.
_VECTOR_STORE_BYTES = (("support", 1.8e9), ("rag", 6.5e9), ("default", 2.5e8), ("legacy", 4.0e8))


class Organization:
    """A deterministic simulated OpenAI organization.

    Example:
        >>> org = Organization(seed=7, start="2025-03-01", days=30)
        >>> buckets = org.truth("completions", org.start, org.start + 86400, "1h", ["project_id"])

    Attributes:
        seed: the seed everything derives from.
        start: unix seconds of the first day (00:00 UTC).
        end: unix seconds after the last day (exclusive).
        days: number of days with usage.
        id: organization id (``org-...``), also sent as the extra ``organization_id`` field on results.
        projects, users, service_accounts, api_keys, vector_stores: the organization chart.
        series: traffic series per usage stream (``vector_stores`` has one gauge series per project).
    """

    def __init__(self, seed: int = 0, start: date | datetime | str | int = "2025-01-01", days: int = 30) -> None:
        """Build the organization.

        Args:
            seed: any integer; the same seed, start and days always give the same organization and traffic.
            start: first day with usage (a date, an ISO date string, or unix seconds floored to the UTC day).
            days: number of days with usage (>= 1).

        Raises:
            ValueError: if ``days`` < 1.
        """
        if days < 1:
            raise ValueError("days must be >= 1")
        self.seed = seed
        self.start = _to_day(start)
        self.days = days
        self.end = self.start + days * DAY
        self.hours = days * 24
        self.start_weekday = datetime.fromtimestamp(self.start, UTC).weekday()
        self.id = ident("org-", 24, seed, "org")
        self.name = "Simulated Org"
        self._build()
        self.engine = TruthEngine(self)

    # -- chart ---------------------------------------------------------------------------------------------------

    def _build(self) -> None:
        seed, start = self.seed, self.start
        archive_day = max(1, self.days // 2)
        self.projects: list[Project] = []
        pid: dict[str, str] = {}
        for slug, name, age in _PROJECTS:
            pid[slug] = ident("proj_", 24, seed, "project", slug)
            archived = start + archive_day * DAY + 13 * HOUR if slug == "legacy" else None
            self.projects.append(Project(pid[slug], name, start - age * DAY + 37 * 60 * (1 + age % 17), archived))
        self.project_by_id = {p.id: p for p in self.projects}
        self._project_end_hour = {
            p.id: (self.hours if p.archived_at is None else (p.archived_at - start) // HOUR) for p in self.projects
        }

        self.users: list[User] = []
        uid: dict[str, str] = {}
        for i, (slug, name, role, memberships) in enumerate(_USERS):
            uid[slug] = ident("user-", 24, seed, "user", slug)
            first = name.split()[0].lower()
            self.users.append(
                User(
                    uid[slug],
                    name,
                    f"{first}@example.com",
                    role,  # type: ignore[arg-type]
                    start - (500 - 40 * i) * DAY,
                    tuple((pid[p], r) for p, r in memberships.items()),
                )
            )
        self.user_by_id = {u.id: u for u in self.users}

        self.service_accounts: list[ServiceAccount] = []
        said: dict[str, str] = {}
        for slug, name, proj, role in _SERVICE_ACCOUNTS:
            said[slug] = ident("svc_acct_", 16, seed, "sa", slug)
            self.service_accounts.append(
                ServiceAccount(said[slug], name, pid[proj], role, start - 120 * DAY)  # type: ignore[arg-type]
            )

        self.api_keys: list[ApiKey] = []
        self._key_user: dict[str, str] = {}
        kid: dict[str, str] = {}
        for i, (slug, name, proj, owner_type, owner, access) in enumerate(_KEYS):
            kid[slug] = ident("key_", 16, seed, "key", slug)
            owner_id = uid[owner] if owner_type == "user" else said[owner]
            secret = ident("", 8, seed, "secret", slug)
            project = self.project_by_id[pid[proj]]
            last_used = None if slug == "unused" else min(self.end, project.archived_at or self.end) - 300
            self.api_keys.append(
                ApiKey(
                    kid[slug],
                    name,
                    pid[proj],
                    owner_type,  # type: ignore[arg-type]
                    owner_id,
                    start - (60 + 7 * i) * DAY,
                    last_used,
                    access,  # type: ignore[arg-type]
                    f"sk-proj-{secret[:3]}...{secret[-4:]}",
                )
            )
            # [inferred] usage made with a service-account key reports the service account id as user_id.
            self._key_user[kid[slug]] = owner_id
        self.key_by_id = {k.id: k for k in self.api_keys}
        self._kid = kid
        self._pid = pid

        self.vector_stores: list[VectorStore] = []
        vsid: dict[str, str] = {}
        for slug, name, proj in _VECTOR_STORES:
            vsid[slug] = ident("vs_", 24, seed, "vs", slug)
            self.vector_stores.append(VectorStore(vsid[slug], name, pid[proj]))

        self.series: dict[str, list[Series]] = {}

        def key_dims(kslug: str) -> dict[str, Any]:
            k = self.key_by_id[kid[kslug]]
            return {"project_id": k.project_id, "user_id": self._key_user[k.id], "api_key_id": k.id}

        def add(stream: str, dims: dict[str, Any], profile: Profile, shape: int = 2) -> None:
            lst = self.series.setdefault(stream, [])
            order = STREAMS[stream].group_by
            full = {g: dims[g] for g in order}
            # api_source (added to the API later) is not part of the key: the traffic stays what it was
            key = hash_key(seed, stream, *(full[g] for g in order if g != "api_source"))
            end_hour = self._project_end_hour[full["project_id"]]
            lst.append(Series(stream, len(lst), full, profile, shape, key, end_hour))

        for kslug, extra, prof, shape in _COMPLETIONS:
            add("completions", {**key_dims(kslug), **extra}, prof, shape)
        for kslug, extra, prof, shape in _DECISIONS:
            add("decisions", {**key_dims(kslug), **extra}, prof, shape)
        for stream, table in (
            ("embeddings", _EMBEDDINGS),
            ("moderations", _MODERATIONS),
            ("images", _IMAGES),
            ("audio_speeches", _SPEECHES),
            ("audio_transcriptions", _TRANSCRIPTIONS),
            ("web_search_calls", _WEB_SEARCH),
        ):
            for kslug, extra, prof in table:
                add(stream, {**key_dims(kslug), **extra}, prof)
        for kslug, extra, prof in _FILE_SEARCH:
            add("file_search_calls", {**key_dims(kslug), "vector_store_id": vsid[extra["vector_store"]]}, prof)
        for proj, prof in _CODE_INTERPRETER:
            add("code_interpreter_sessions", {"project_id": pid[proj]}, prof)
        for proj, initial in _VECTOR_STORE_BYTES:
            add("vector_stores", {"project_id": pid[proj]}, Profile(0, size=initial))

    # -- lookups -------------------------------------------------------------------------------------------------

    def project(self, slug: str) -> Project:
        """The project with a chart slug (``default``, ``support``, ``rag``, ``studio``, ``legacy``)."""
        return self.project_by_id[self._pid[slug]]

    def api_key(self, slug: str) -> ApiKey:
        """The API key with a chart slug (``support-prod``, ``ada-dev``, ...)."""
        return self.key_by_id[self._kid[slug]]

    def service_accounts_of(self, project_id: str) -> list[ServiceAccount]:
        """Service accounts of a project."""
        return [s for s in self.service_accounts if s.project_id == project_id]

    def api_keys_of(self, project_id: str) -> list[ApiKey]:
        """API keys of a project."""
        return [k for k in self.api_keys if k.project_id == project_id]

    def users_of(self, project_id: str) -> list[tuple[User, str]]:
        """Members of a project with their project role."""
        return [(u, role) for u in self.users for p, role in u.projects if p == project_id]

    # -- spend controls (ref-11 "Spend controls"; SDK 3.57 organization_spend_limit.py, ...) ------------------------

    def spend_limit(self, project_id: str | None = None) -> dict[str, Any] | None:
        """The hard monthly spend limit of the organization or a project (``None``: none configured, a 404)."""
        if project_id is None:
            return {
                "object": "organization.spend_limit",
                "threshold_amount": 2_500_000,  # cents: $25,000.00
                "currency": "USD",
                "interval": "month",
                "enforcement": {"status": "inactive"},
            }
        cents = {"support": 1_200_050, "studio": 75_099}.get(self._slug_of(project_id))
        if cents is None:
            return None
        return {
            "object": "project.spend_limit",
            "threshold_amount": cents,
            "currency": "USD",
            "interval": "month",
            "enforcement": {"status": "enforcing" if cents < 100_000 else "inactive"},
        }

    def spend_alerts(self, project_id: str | None = None) -> list[dict[str, Any]]:
        """Spend alerts of the organization or a project (notification thresholds, cents)."""
        owner = self.users[0]
        if project_id is None:
            specs: list[tuple[str, int, str | None]] = [("50", 1_250_000, None), ("80", 2_000_000, "[OpenAI]")]
            kind, scope = "organization.spend_alert", "org"
        else:
            slug = self._slug_of(project_id)
            specs = [("90", 1_080_045, None)] if slug == "support" else []
            kind, scope = "project.spend_alert", slug
        out = []
        for tag, cents, prefix in specs:
            channel: dict[str, Any] = {"type": "email", "recipients": [owner.email]}
            if prefix is not None:
                channel["subject_prefix"] = prefix
            out.append(
                {
                    "object": kind,
                    "id": ident("spend_alert_", 16, self.seed, "alert", scope, tag),
                    "threshold_amount": cents,
                    "currency": "USD",
                    "interval": "month",
                    "notification_channel": channel,
                }
            )
        return out

    def rate_limits(self, project_id: str) -> list[dict[str, Any]]:
        """Per-model rate limits of a project: one per completions model its keys use."""
        models = sorted({s.dims["model"] for s in self.series["completions"] if s.dims["project_id"] == project_id})
        out = []
        for i, model in enumerate(models):
            r: dict[str, Any] = {
                "object": "project.rate_limit",
                "id": ident("rl-", 12, self.seed, "rate", project_id, model),
                "model": model,
                "max_requests_per_1_minute": 500 * (i + 1),
                "max_tokens_per_1_minute": 30_000 * (i + 1),
            }
            if "mini" in model:
                r["batch_1_day_max_input_tokens"] = 2_000_000
                r["max_requests_per_1_day"] = 10_000
            if "image" in model:
                r["max_images_per_1_minute"] = 5
            if "audio" in model:
                r["max_audio_megabytes_per_1_minute"] = 25
            out.append(r)
        return out

    def _slug_of(self, project_id: str) -> str:
        return next((slug for slug, pid in self._pid.items() if pid == project_id), "")

    # -- truth ---------------------------------------------------------------------------------------------------

    def truth(
        self,
        stream: str,
        start: int,
        end: int,
        bucket_width: str = "1d",
        group_by: Sequence[str] = (),
        filters: Mapping[str, Sequence[Any]] | None = None,
    ) -> list[Bucket]:
        """Final (fully revised) values of a stream, bucketed and grouped exactly as the API would.

        Buckets are UTC-aligned; a non-aligned ``start`` is floored to the minute and the first/last buckets are
        clipped to ``[start, end)`` (ref openai-usage-api.md §4.1). Every bucket is returned, empty ones with
        ``results: []`` (ref §4.2). Results are the API's result dicts without unknown extra fields: dimensions
        not grouped are ``None``; measures are ``int``; costs ``amount.value`` and ``quantity`` are ``Decimal``.

        Args:
            stream: endpoint name (``completions`` ... ``web_search_calls``, ``costs``).
            start: unix seconds, inclusive.
            end: unix seconds, exclusive.
            bucket_width: ``1m``, ``1h`` or ``1d`` (costs: ``1d`` only).
            group_by: dimensions to group by (any subset of the stream's ``group_by`` values).
            filters: dimension -> allowed values, e.g. ``{"project_id": [...], "batch": [True]}``.

        Returns:
            The buckets in time order.

        Raises:
            ValueError: unknown stream, width or ``group_by`` value.
        """
        sdef = STREAMS.get(stream)
        if sdef is None:
            raise ValueError(f"unknown stream {stream!r}")
        if bucket_width not in sdef.widths:
            raise ValueError(f"bucket_width {bucket_width!r} not supported by {stream}")
        bad = [g for g in group_by if g not in sdef.group_by]
        if bad:
            raise ValueError(f"group_by {bad} not allowed for {stream}")
        edges = self.engine.edges(start, end, WIDTH_SECONDS[bucket_width])
        flt = {k: frozenset(v) for k, v in (filters or {}).items()}
        results = self.engine.results(sdef, edges, group_by, flt, now=None, horizon=0)
        return [Bucket(start_time=s, end_time=e, results=r) for (s, e), r in zip(edges, results, strict=True)]

    def totals(
        self,
        stream: str,
        start: int | None = None,
        end: int | None = None,
        by: Sequence[str] = (),
        filters: Mapping[str, Sequence[Any]] | None = None,
    ) -> dict[tuple[Any, ...], dict[str, Any]]:
        """Final totals over ``[start, end)`` (default: the whole window), keyed by the ``by`` dimension values.

        Counters are summed. For the ``vector_stores`` gauge the value is the gauge rule applied to the whole range
        (bytes at its last minute). For costs the measures are ``amount`` (Decimal) and, when ``line_item`` is in
        ``by``, ``quantity`` (Decimal).

        Args:
            stream: endpoint name.
            start: unix seconds, inclusive (default: org start).
            end: unix seconds, exclusive (default: org end).
            by: dimensions to key the totals by (``()`` for the grand total under key ``()``).
            filters: dimension -> allowed values.

        Returns:
            ``{(dim values...): {measure: value}}``; optional completions fields absent when not reported.
        """
        sdef = STREAMS[stream]
        s = self.start if start is None else start
        e = self.end if end is None else end
        flt = {k: frozenset(v) for k, v in (filters or {}).items()}
        out: dict[tuple[Any, ...], dict[str, Any]] = {}
        if e <= s:
            return out
        (results,) = self.engine.results(sdef, [(s - s % 60, e)], by, flt, now=None, horizon=0)
        for r in results:
            key = tuple(r[g] for g in by)
            if sdef.kind == "costs":
                m: dict[str, Any] = {"amount": r["amount"]["value"]}
                if r["quantity"] is not None:
                    m["quantity"] = r["quantity"]
            else:
                m = {k: r[k] for k in sdef.measures if k in r}
            out[key] = m
        return out

    def total_cost(self, start: int | None = None, end: int | None = None) -> Decimal:
        """Total billed amount (USD) over whole days overlapping ``[start, end)``."""
        t = self.totals("costs", start, end)
        return t[()]["amount"] if t else Decimal("0")


__all__ = ["ApiKey", "Bucket", "Organization", "Project", "ServiceAccount", "User", "VectorStore"]
