"""Configuration: typed, validated, with a documented precedence.

Precedence, highest first: **command-line flag > environment variable > TOML file > default**.

Environment variables (the names users and deployment manifests rely on):

=================================  =============================================================
``OPENAI_ADMIN_KEY``               the Admin key (a ``SecretStr``; never logged)
``OPENAI_ADMIN_KEY_FILE``          a file holding it (systemd ``LoadCredential=``, Kubernetes Secret)
``OPENAI_BASE_URL``                default ``https://api.openai.com/v1`` (proxies, the simulator)
``OPENAI_ORGANIZATION_ID``/``_NAME``  label of the organization in documents (default ``default``)
``USAGE_COLLECTOR_SINK``           ``duckdb:PATH`` | ``ndjson:PATH`` | ``elasticsearch``
``USAGE_COLLECTOR_CONFIG``         the TOML file (also ``--config``)
``ELASTICSEARCH_URL`` ...          see :class:`Settings` (``_CLOUD_ID``, ``_API_KEY``, ``_USERNAME``,
                                   ``_PASSWORD``, ``_CA_CERTS``, ``_VERIFY_CERTS``)
=================================  =============================================================

Every other setting is a TOML key of the same name (``finalization_grace = "15m"``), or an environment
variable ``USAGE_COLLECTOR_<NAME>``. Per-stream tables: ``[bucket_width]``, ``[restatement]``.
Durations are ``90s``, ``15m``, ``2h``, ``3d`` or plain seconds.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

# pydantic looks for plugins when it builds its first validator, reading the entry points of every installed
# distribution (importlib.metadata: ~3 ms of CPU, 3-8 ms of wall time of a no-op `run`, P3). No plugin has anything
# to observe in this module's models, so they are built with plugins off, as typer builds its adapters
# (typer._adapters.disabled_pydantic_plugins); the variable is put back after the last model (_plugins_back).
_PLUGINS_ENV = os.environ.get("PYDANTIC_DISABLE_PLUGINS")
os.environ["PYDANTIC_DISABLE_PLUGINS"] = "1"

from pydantic import (  # noqa: E402
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (  # noqa: E402
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from .catalogue import STREAM_NAMES, STREAMS  # noqa: E402
from .errors import ConfigError  # noqa: E402

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_DUCKDB = "usage.duckdb"

#: Settings given as durations (``90s``, ``15m``, ``2h``, ``3d`` or seconds).
DURATION_FIELDS = (
    "finalization_grace",
    "costs_finalization_grace",
    "initial_lookback",
    "lease_ttl",
    "request_timeout",
    "max_retry_time",
    "retry_after_cap",
    "initial_backoff",
    "max_backoff",
    "interval",
    "jitter",
    "stop_timeout",
    "run_deadline",
    "spend_controls_every",
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """``"15m"`` -> ``900.0``; numbers are seconds.

    Raises:
        ValueError: not a duration.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration like 90s, 15m, 2h, 3d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a duration; use e.g. 90s, 15m, 2h, 3d")
    return float(m.group(1)) * _UNITS[m.group(2)]


class OrgConfig(BaseModel):
    """One organization (``[[organizations]]`` in the TOML file)."""

    model_config = {"extra": "forbid"}

    id: str = "default"
    name: str | None = None
    admin_key: SecretStr | None = None
    admin_key_file: Path | None = None
    base_url: str | None = None

    @field_validator("id")
    @classmethod
    def _id_ok(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", v):
            raise ValueError("use letters, digits, '.', '_' or '-'")
        return v

    def resolve_key(self) -> SecretStr:
        """The Admin key, read from the file if one is configured.

        Raises:
            ConfigError: neither a key nor a readable key file; the message names the setting.
        """
        if self.admin_key is not None and self.admin_key.get_secret_value().strip():
            return SecretStr(self.admin_key.get_secret_value().strip())
        if self.admin_key_file is not None:
            try:
                text = self.admin_key_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"OPENAI_ADMIN_KEY_FILE: cannot read {self.admin_key_file}: {exc.strerror}") from None
            if not text:
                raise ConfigError(f"OPENAI_ADMIN_KEY_FILE: {self.admin_key_file} is empty")
            return SecretStr(text)
        raise ConfigError(
            f"organization {self.id!r}: no Admin key; set OPENAI_ADMIN_KEY or OPENAI_ADMIN_KEY_FILE "
            "(create one at https://platform.openai.com/settings/organization/admin-keys)"
        )


#: ``alert_at`` of a budget that does not set it: percents of the budget's amount.
DEFAULT_ALERT_AT = (50, 80, 100)


class BudgetConfig(BaseModel):
    """One monthly budget (``[[budgets]]`` in the TOML file).

    ``amount`` is USD per calendar month (UTC). ``project_id`` absent: the whole organization. ``alert_at``: the
    percents of ``amount`` whose crossing by the month-to-date spend raises an alert (Kibana rule). With several
    ``[[organizations]]``, ``organization_id`` names the one the budget is for.

    Example::

        [[budgets]]
        name = "platform"
        amount = 2500
        project_id = "proj_abc"
        alert_at = [50, 80, 100]
    """

    model_config = {"extra": "forbid"}

    name: str
    amount: Decimal
    project_id: str | None = None
    organization_id: str | None = None
    alert_at: list[int] = Field(default_factory=lambda: list(DEFAULT_ALERT_AT))

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        v = v.strip()
        if not v or len(v) > 100:
            raise ValueError("must be 1 to 100 characters")
        return v

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_number(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float | str | Decimal):
            raise ValueError("must be a number of USD per month, e.g. 2500")
        return Decimal(str(v)) if isinstance(v, float) else v  # 2500.1 stays 2500.1, not its binary expansion

    @field_validator("amount")
    @classmethod
    def _amount_ok(cls, v: Decimal) -> Decimal:
        if not v.is_finite() or v <= 0:
            raise ValueError("must be more than 0 (USD per calendar month)")
        return v

    @field_validator("project_id", "organization_id")
    @classmethod
    def _id_ok(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty (leave it out for the whole organization)")
        return v.strip() if v is not None else None

    @field_validator("alert_at", mode="before")
    @classmethod
    def _alert_at_ok(cls, v: Any) -> list[int]:
        if not isinstance(v, list | tuple):
            raise ValueError("expected a list of percents, e.g. [50, 80, 100]")
        out: set[int] = set()
        for x in v:
            if isinstance(x, bool) or not isinstance(x, int | float) or x != int(x) or not 1 <= x <= 1000:
                raise ValueError(f"{x!r} is not a whole percent from 1 to 1000")
            out.add(int(x))
        return sorted(out)

    @property
    def scope(self) -> str:
        """``organization`` or ``project <id>``."""
        return "organization" if self.project_id is None else f"project {self.project_id}"


def _budget_errors(items: Any) -> list[BudgetConfig]:
    """``[[budgets]]`` as models; a bad one raises ``ValueError`` naming the budget and its key."""
    if not isinstance(items, list | tuple):
        raise ValueError("expected a list of budgets ([[budgets]] tables in the TOML file)")
    out: list[BudgetConfig] = []
    for i, item in enumerate(items):
        if isinstance(item, BudgetConfig):
            out.append(item)
            continue
        raw_name = item.get("name") if isinstance(item, Mapping) else None
        label = f"budget {raw_name!r}" if isinstance(raw_name, str) and raw_name.strip() else f"budget #{i + 1}"
        if not isinstance(item, Mapping):
            raise ValueError(f"{label}: expected a table with name and amount")
        try:
            out.append(BudgetConfig.model_validate(item))
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a misspelt key first
            key = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown key (allowed: {', '.join(BudgetConfig.model_fields)})"
            elif err["type"] == "missing":
                msg = "is required"
            elif err["type"].startswith("decimal"):
                msg = "must be a number of USD per month, e.g. 2500"
            raise ValueError(f"{label}: {key}: {msg}") from None
    return out


class Settings(BaseSettings):
    """Every setting of usage-collector. See the module docstring for precedence and names."""

    model_config = SettingsConfigDict(
        env_prefix="USAGE_COLLECTOR_",
        extra="forbid",
        populate_by_name=True,
        case_sensitive=False,
    )

    # --- OpenAI -------------------------------------------------------------------------------------
    openai_admin_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("OPENAI_ADMIN_KEY", "openai_admin_key")
    )
    openai_admin_key_file: Path | None = Field(
        None, validation_alias=AliasChoices("OPENAI_ADMIN_KEY_FILE", "openai_admin_key_file")
    )
    openai_base_url: str = Field(DEFAULT_BASE_URL, validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url"))
    organization_id: str = Field("default", validation_alias=AliasChoices("OPENAI_ORGANIZATION_ID", "organization_id"))
    organization_name: str | None = Field(
        None, validation_alias=AliasChoices("OPENAI_ORGANIZATION_NAME", "organization_name")
    )
    organizations: list[OrgConfig] = Field(default_factory=list)

    # --- what to collect --------------------------------------------------------------------------
    # NoDecode: the environment gives "completions,costs" (or JSON), parsed by the validator below.
    streams: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(STREAM_NAMES))
    bucket_width: dict[str, Literal["1m", "1h", "1d"]] = Field(default_factory=dict)
    finalization_grace: float = 900.0
    costs_finalization_grace: float = 0.0
    restatement: dict[str, float] = Field(default_factory=dict)
    initial_lookback: float = 7 * 86400.0
    enrich_names: bool = True
    #: Costs ``group_by`` (default: project_id, line_item, api_key_id, api_source); add ``user_id`` for costs by
    #: user where the organization's API allows it (a refused optional dimension is dropped with a warning).
    costs_group_by: Annotated[list[str] | None, NoDecode] = None
    #: Snapshot the organization's and projects' spend limits, spend alerts and rate limits every cycle.
    spend_controls: bool = True
    #: How often spend controls are read (they change rarely; each read is 1 + 3 requests per project).
    spend_controls_every: float = 3600.0
    #: Monthly budgets (``[[budgets]]``): ``usage-collector budgets``, budget documents, Kibana budget rules.
    budgets: list[BudgetConfig] = Field(default_factory=list)

    # --- HTTP ---------------------------------------------------------------------------------------
    rate_limit: float = 5.0
    rate_limit_burst: int = 30
    concurrency: int = 4
    request_timeout: float = 60.0
    max_attempts: int = 8
    max_retry_time: float = 600.0
    retry_after_cap: float = 120.0
    initial_backoff: float = 1.0
    max_backoff: float = 60.0

    # --- sink ---------------------------------------------------------------------------------------
    sink: str | None = None
    namespace: str = "default"
    data_stream_type: Literal["metrics", "logs"] = "metrics"
    lease_ttl: float = 600.0
    interval: float = 300.0
    jitter: float = 30.0
    stop_timeout: float = 60.0
    #: ``run``: after this long no new request starts; what was written is kept and checkpointed, and the run
    #: exits 1 naming the streams left (the next run resumes them). Below the shipped CronJob and systemd limits
    #: (240 s) so the run says why before it is killed; 0 disables it.
    run_deadline: float = 210.0
    #: ``status --check``: a stream is stale when its cursor is this many intervals behind the final edge.
    stale_intervals: int = 3
    retention_days: int | None = None
    #: How Elasticsearch expires data: ``ilm`` (an ILM policy), ``data_stream`` (data stream lifecycle, the only
    #: kind on clusters without ILM such as Elastic Cloud Serverless), ``auto`` (ILM where the cluster has it).
    lifecycle: Literal["auto", "ilm", "data_stream"] = "auto"

    elasticsearch_url: str | None = Field(None, validation_alias=AliasChoices("ELASTICSEARCH_URL", "elasticsearch_url"))
    elasticsearch_cloud_id: str | None = Field(
        None, validation_alias=AliasChoices("ELASTICSEARCH_CLOUD_ID", "elasticsearch_cloud_id")
    )
    elasticsearch_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ELASTICSEARCH_API_KEY", "elasticsearch_api_key")
    )
    elasticsearch_api_key_file: Path | None = Field(
        None, validation_alias=AliasChoices("ELASTICSEARCH_API_KEY_FILE", "elasticsearch_api_key_file")
    )
    elasticsearch_password_file: Path | None = Field(
        None, validation_alias=AliasChoices("ELASTICSEARCH_PASSWORD_FILE", "elasticsearch_password_file")
    )
    elasticsearch_username: str | None = Field(
        None, validation_alias=AliasChoices("ELASTICSEARCH_USERNAME", "elasticsearch_username")
    )
    elasticsearch_password: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ELASTICSEARCH_PASSWORD", "elasticsearch_password")
    )
    elasticsearch_ca_certs: Path | None = Field(
        None, validation_alias=AliasChoices("ELASTICSEARCH_CA_CERTS", "elasticsearch_ca_certs")
    )
    elasticsearch_verify_certs: bool = Field(
        True, validation_alias=AliasChoices("ELASTICSEARCH_VERIFY_CERTS", "elasticsearch_verify_certs")
    )
    kibana_url: str | None = Field(None, validation_alias=AliasChoices("KIBANA_URL", "kibana_url"))
    kibana_space: str | None = None

    # --- logs ---------------------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text", "auto"] = "auto"

    _config_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))

    # --- validation ---------------------------------------------------------------------------------
    @field_validator(*DURATION_FIELDS, mode="before")
    @classmethod
    def _durations(cls, v: Any) -> float:
        return parse_duration(v)

    @field_validator("restatement", mode="before")
    @classmethod
    def _restatement(cls, v: Any) -> dict[str, float]:
        if not isinstance(v, dict):
            raise ValueError("expected a table of stream = duration")
        return {str(k): parse_duration(d) for k, d in v.items()}

    @field_validator("streams", mode="before")
    @classmethod
    def _streams(cls, v: Any) -> list[str]:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                try:
                    v = json.loads(text)
                except ValueError:
                    raise ValueError("expected a JSON list or comma-separated stream names") from None
            else:
                v = [s.strip() for s in text.split(",") if s.strip()]
        if not v:
            raise ValueError("at least one stream is required")
        return list(v)

    @field_validator("costs_group_by", mode="before")
    @classmethod
    def _costs_group_by(cls, v: Any) -> list[str] | None:
        if isinstance(v, str):
            v = [g.strip() for g in v.split(",") if g.strip()]
        if v is None:
            return None
        allowed = STREAMS["costs"].group_by
        bad = [g for g in v if g not in allowed]
        if bad:
            raise ValueError(f"unknown costs group_by {bad[0]!r}; allowed: {', '.join(allowed)}")
        return [g for g in allowed if g in v]  # catalogue order

    @field_validator("budgets", mode="before")
    @classmethod
    def _budgets(cls, v: Any) -> list[BudgetConfig]:
        return _budget_errors(v)

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0 (requests per second)")
        return v

    @field_validator("run_deadline")
    @classmethod
    def _not_negative(cls, v: float) -> float:
        if v < 0:
            raise ValueError("must be 0 (no deadline) or a duration such as 210s or 4m")
        return v

    @field_validator("interval", "request_timeout", "lease_ttl")
    @classmethod
    def _more_than_zero(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be more than 0 seconds (e.g. 5m)")
        return v

    @field_validator("concurrency", "max_attempts", "rate_limit_burst", "stale_intervals")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        # Data stream naming rules: lowercase, no '-', no special characters, < 100 bytes.
        if not re.fullmatch(r"[a-z0-9_]{1,100}", v):
            raise ValueError("lowercase letters, digits and '_' only (it becomes part of a data stream name)")
        return v

    @field_validator("openai_base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _secret_files(self) -> Settings:
        """``ELASTICSEARCH_API_KEY_FILE`` / ``_PASSWORD_FILE`` (Kubernetes Secret volumes, systemd credentials)."""
        for attr, env in (
            ("elasticsearch_api_key", "ELASTICSEARCH_API_KEY_FILE"),
            ("elasticsearch_password", "ELASTICSEARCH_PASSWORD_FILE"),
        ):
            path: Path | None = getattr(self, attr + "_file")
            if path is not None and getattr(self, attr) is None:
                try:
                    text = path.read_text().strip()
                except OSError as exc:
                    raise ValueError(f"{env}: cannot read {path}: {exc.strerror}") from None
                if not text:
                    raise ValueError(f"{env}: {path} is empty")
                setattr(self, attr, SecretStr(text))
        return self

    @model_validator(mode="after")
    def _cross(self) -> Settings:
        for s in self.streams:
            if s not in STREAMS:
                raise ValueError(f"streams: unknown stream {s!r}; known: {', '.join(STREAM_NAMES)}")
        for table in ("bucket_width", "restatement"):
            for s in getattr(self, table):
                if s not in STREAMS:
                    raise ValueError(f"{table}: unknown stream {s!r}; known: {', '.join(STREAM_NAMES)}")
        for s, w in self.bucket_width.items():
            if w not in STREAMS[s].widths:
                raise ValueError(f"bucket_width: {s} supports only {', '.join(STREAMS[s].widths)}")
        self._check_budgets()
        return self

    def _check_budgets(self) -> None:
        """Names unique; ``organization_id`` required with several organizations, and one of them."""
        seen: set[str] = set()
        org_ids = [o.id for o in self.organizations]
        for b in self.budgets:
            if b.name in seen:
                raise ValueError(f"budgets: two budgets are named {b.name!r}; give each its own name")
            seen.add(b.name)
            if len(org_ids) > 1 and b.organization_id is None:
                raise ValueError(
                    f"budgets: budget {b.name!r}: organization_id is required with several organizations "
                    f"(one of {', '.join(org_ids)})"
                )
            if org_ids and b.organization_id is not None and b.organization_id not in org_ids:
                raise ValueError(
                    f"budgets: budget {b.name!r}: organization_id {b.organization_id!r} is not a configured "
                    f"organization (one of {', '.join(org_ids)})"
                )

    # --- derived ------------------------------------------------------------------------------------
    def group_by_for(self, stream: str) -> tuple[str, ...]:
        """The ``group_by`` a stream requests (before any dimension the API refused is dropped)."""
        if stream == "costs" and self.costs_group_by is not None:
            return tuple(self.costs_group_by)
        return STREAMS[stream].request_group_by

    def width_for(self, stream: str) -> str:
        return self.bucket_width.get(stream, STREAMS[stream].default_width)

    def grace_for(self, stream: str) -> float:
        return self.costs_finalization_grace if STREAMS[stream].is_costs else self.finalization_grace

    def restatement_for(self, stream: str) -> float:
        if stream in self.restatement:
            value = self.restatement[stream]
        else:
            value = 3 * 86400.0 if STREAMS[stream].is_costs else 86400.0
        if STREAMS[stream].is_costs:
            value = max(value, 2 * 86400.0)  # costs: at least the last 2 UTC days (DESIGN.md)
        return value

    def orgs(self) -> list[OrgConfig]:
        """The organizations to collect: ``[[organizations]]``, or the single one from the environment."""
        if self.organizations:
            return self.organizations
        return [
            OrgConfig(
                id=self.organization_id,
                name=self.organization_name,
                admin_key=self.openai_admin_key,
                admin_key_file=self.openai_admin_key_file,
                base_url=self.openai_base_url,
            )
        ]

    def sink_spec(self) -> str:
        """The sink to use: ``--sink``/``USAGE_COLLECTOR_SINK``; Elasticsearch when it is configured;
        otherwise the embedded DuckDB file."""
        if self.sink:
            return self.sink
        if self.elasticsearch_url or self.elasticsearch_cloud_id:
            return "elasticsearch"
        return f"duckdb:{DEFAULT_DUCKDB}"


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the file named by ``--config`` / ``USAGE_COLLECTOR_CONFIG`` (lowest precedence but defaults)."""

    path: Path | None = None

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _TomlSource.path
        if path is None:
            env = os.environ.get("USAGE_COLLECTOR_CONFIG")
            path = Path(env) if env else None
        if path is None:
            return {}
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"--config: file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from None
        return data


def _plugins_back() -> None:
    """``PYDANTIC_DISABLE_PLUGINS`` as it was before this module set it (see the imports)."""
    if _PLUGINS_ENV is None:
        os.environ.pop("PYDANTIC_DISABLE_PLUGINS", None)
    else:
        os.environ["PYDANTIC_DISABLE_PLUGINS"] = _PLUGINS_ENV


_plugins_back()


def load_settings(
    config_file: Path | None = None, *, flags: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Build :class:`Settings` from flags (``overrides``), environment, the TOML file and defaults.

    Args:
        config_file: the TOML file (``--config``); ``USAGE_COLLECTOR_CONFIG`` when ``None``.
        flags: the command-line flag of a setting (``{"interval": "--interval"}``): an error in a value
            given by that flag names the flag rather than the setting.
        overrides: values from command-line flags; ``None`` values are ignored.

    Raises:
        ConfigError: one line naming the first bad setting and what is allowed.
    """
    _TomlSource.path = config_file
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except SettingsError as exc:  # an environment value that could not be decoded (e.g. not JSON)
        raise ConfigError(str(exc).split("\n")[0]) from None
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif err["type"] == "literal_error":
            msg = msg.replace("Input should be", "allowed:")
        field = loc.split(".")[0]
        if field == "budgets" and "." not in loc:  # the message names the budget ("budget 'platform': amount: ...")
            raise ConfigError(f"budgets: {msg}") from None
        if not loc:  # a model-level check; its message starts with the setting's name ("streams: ...")
            field = msg.split(":", 1)[0]
            if flags and field in flags and field in given:
                msg = flags[field] + msg[len(field) :]
            raise ConfigError(msg) from None
        name = flags[field] + loc[len(field) :] if flags and field in flags and field in given else _setting_name(loc)
        raise ConfigError(f"{name}: {msg}") from None
    finally:
        _TomlSource.path = None


def _setting_name(loc: str) -> str:
    field = loc.split(".")[0]
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, AliasChoices):
        first = info.validation_alias.choices[0]
        if isinstance(first, str) and first.isupper():
            return first + loc[len(field) :]
    if info is not None:
        return f"{loc} (USAGE_COLLECTOR_{field.upper()})"
    return loc


# --- the README's settings table ---------------------------------------------------------------------------

#: What each setting means, for the README's table. A setting of :class:`Settings` with neither a line here nor
#: a ``Field(description=...)`` fails ``tests/test_docs_settings.py``. A key in :data:`SETTING_DEFAULTS` says
#: its default where the model's value does not.
SETTING_HELP: dict[str, str] = {
    "openai_admin_key": "Admin key (never logged, never in an error, state file or document)",
    "openai_admin_key_file": "file holding the key (systemd `LoadCredential=`, Kubernetes Secret volume)",
    "openai_base_url": "proxies, the simulator",
    "organization_id": "label of the organization in documents and `_id`s",
    "organization_name": "its display name in documents",
    "organizations": "several organizations (`[[organizations]]` with `id`, `name`, `admin_key_file`, `base_url`)",
    "streams": "which of `" + ", ".join(STREAM_NAMES) + "`",
    "bucket_width": "per stream (`[bucket_width]` table), `1m`/`1h`/`1d` (costs: `1d` only); "
    "`vector_stores.usage_bytes` is a gauge, so one value per project and day",
    "finalization_grace": "a usage bucket is written once `end_time <= now - grace`",
    "costs_finalization_grace": "costs: closed UTC days only",
    "restatement": "per stream (`[restatement]` table): trailing window re-read every run (costs at least 2 days); "
    "changed buckets are replaced",
    "initial_lookback": "where a first `run` starts",
    "enrich_names": "add project, API key and user names from the Admin list endpoints",
    "rate_limit": "requests per second, all streams together",
    "rate_limit_burst": "requests allowed at once before the rate applies (a routine cycle starts without waiting)",
    "concurrency": "streams collected in parallel",
    "request_timeout": "timeout of one HTTP request to the API",
    "max_attempts": "attempts per request (429, 5xx, timeouts, connection errors)",
    "max_retry_time": "retry budget per request",
    "retry_after_cap": "a `Retry-After` above this ends the request (the next run resumes)",
    "initial_backoff": "first backoff between attempts (doubles, with jitter)",
    "max_backoff": "longest backoff between attempts",
    "sink": "`duckdb:PATH`, `ndjson:PATH` or `elasticsearch` (also `--sink`)",
    "namespace": "data streams are `<type>-openai.<stream>-<namespace>`",
    "data_stream_type": "`metrics` or `logs`",
    "lease_ttl": "how long a run's lease on an organization lasts unless renewed (keep it near the run deadline)",
    "interval": "`serve`: time between cycles (also `--interval`)",
    "jitter": "`serve`: random delay before the first cycle (also `--jitter`)",
    "run_deadline": "`run`: after this long no new request starts; what was written stays checkpointed and the run "
    "exits 1 naming the streams left (0: no deadline; default below the shipped 240 s CronJob/systemd limits)",
    "stop_timeout": "`serve`: how long SIGTERM waits for the running cycle (keep it below `TimeoutStopSec=` / "
    "`terminationGracePeriodSeconds`)",
    "stale_intervals": "`status --check` and the stale-stream alert rule: a stream is stale when its cursor trails the "
    "last complete bucket by more than this many intervals",
    "costs_group_by": "costs `group_by` (default `project_id,line_item,api_key_id,api_source`); add `user_id` for "
    "costs by user where the API allows it (a refused optional dimension is dropped with one warning)",
    "spend_controls": "snapshot the spend limits, spend alerts and rate limits of the organization and its projects "
    "into `metrics-openai.limits-*` every cycle",
    "budgets": "monthly budgets (`[[budgets]]` with `name`, `amount` in USD per calendar month UTC, optional "
    "`project_id` (absent: the whole organization), `alert_at` percents (default `[50, 80, 100]`), `organization_id` "
    "with several organizations): `usage-collector budgets`, budget documents, Kibana budget rules",
    "spend_controls_every": "how often a `run` reads the spend controls (each read costs 1 + 3 requests per "
    "project; a change is seen within this long)",
    "retention_days": "`setup`: delete data this many days after rollover (also `--retention-days`)",
    "lifecycle": "`setup`: `ilm`, `data_stream` (data stream lifecycle, e.g. Serverless) or `auto` (ILM where the "
    "cluster has it)",
    "elasticsearch_url": "the Elasticsearch sink",
    "elasticsearch_cloud_id": "Elastic Cloud instead of a URL",
    "elasticsearch_api_key": "API key (the encoded form)",
    "elasticsearch_api_key_file": "file holding it (systemd `LoadCredential=`, Kubernetes Secret volume)",
    "elasticsearch_password_file": "file holding the password",
    "elasticsearch_username": "basic authentication instead of an API key",
    "elasticsearch_password": "its password",
    "elasticsearch_ca_certs": "CA bundle for TLS",
    "elasticsearch_verify_certs": "TLS certificate verification",
    "kibana_url": "`setup` imports the dashboards here (also `--kibana-url`)",
    "kibana_space": "Kibana space id (also `--space`; default space when unset)",
    "log_level": "`DEBUG`, `INFO`, `WARNING`, `ERROR` (also `--log-level`; `--debug` means DEBUG)",
    "log_format": "`json` (ECS), `text`, `auto`: text on a TTY (also `--log-format`)",
}
SETTING_DEFAULTS: dict[str, str] = {
    "openai_base_url": f"`{DEFAULT_BASE_URL}`",
    "streams": f"all {len(STREAM_NAMES)}",
    "bucket_width": "`1h` usage, `1d` costs and `vector_stores`",
    "restatement": "`1d` usage, `3d` costs",
    "sink": f"`duckdb:{DEFAULT_DUCKDB}`, `elasticsearch` when `ELASTICSEARCH_URL` is set",
    "elasticsearch_verify_certs": "on",
}
SETTINGS_TABLE_START = "<!-- settings table: generated by `python -m usage_collector.config README.md` -->"
SETTINGS_TABLE_END = "<!-- end of the settings table -->"


def _human_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s" if seconds else "0"


def setting_env(name: str) -> str:
    """The environment variable of a setting: its upper-case alias, else ``USAGE_COLLECTOR_<NAME>``."""
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        if isinstance(first, str) and first.isupper():
            return first
    return f"USAGE_COLLECTOR_{name.upper()}"


def render_settings_table() -> str:
    """The README's settings table, one row per field of :class:`Settings`, in the model's order.

    Raises:
        KeyError: a setting has no meaning (neither in :data:`SETTING_HELP` nor a ``Field(description=...)``).
    """
    rows = [
        "| setting (TOML key) | environment | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, info in Settings.model_fields.items():
        meaning = info.description or SETTING_HELP.get(name)
        if not meaning:
            raise KeyError(f"setting {name!r} has no meaning: add it to SETTING_HELP in usage_collector/config.py")
        default: Any = None if info.default_factory is not None else info.default
        if name in SETTING_DEFAULTS:
            shown = SETTING_DEFAULTS[name]
        elif default is None:
            shown = "-"
        elif isinstance(default, bool):
            shown = f"`{str(default).lower()}`"
        elif name in DURATION_FIELDS:
            shown = f"`{_human_duration(float(default))}`"
        else:
            shown = f"`{default}`"
        env = f"`{setting_env(name)}`"
        if info.annotation is not None and str(info.annotation).startswith(("dict", "list")) and name != "streams":
            env += " (JSON)"
        rows.append(f"| `{name}` | {env} | {shown} | {meaning} |")
    return "\n".join(rows) + "\n"


def update_readme(path: Path) -> bool:
    """Rewrite the settings table between its markers in ``path``; ``True`` when the file changed."""
    text = path.read_text()
    head, sep, rest = text.partition(SETTINGS_TABLE_START)
    _, sep2, tail = rest.partition(SETTINGS_TABLE_END)
    if not sep or not sep2:
        raise ValueError(f"{path}: the settings table markers are missing")
    new = f"{head}{SETTINGS_TABLE_START}\n{render_settings_table()}{SETTINGS_TABLE_END}{tail}"
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":  # pragma: no cover - python -m usage_collector.config [README.md]
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    print(f"{target}: {'updated' if update_readme(target) else 'already up to date'}")
