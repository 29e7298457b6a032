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
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from .catalogue import STREAM_NAMES, STREAMS
from .errors import ConfigError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_DUCKDB = "usage.duckdb"

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
    @field_validator(
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
        mode="before",
    )
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

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0 (requests per second)")
        return v

    @field_validator("concurrency", "max_attempts", "rate_limit_burst")
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
        return self

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


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from flags (``overrides``), environment, the TOML file and defaults.

    Args:
        config_file: the TOML file (``--config``); ``USAGE_COLLECTOR_CONFIG`` when ``None``.
        overrides: values from command-line flags; ``None`` values are ignored.

    Raises:
        ConfigError: one line naming the first bad setting and what is allowed.
    """
    _TomlSource.path = config_file
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
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
        raise ConfigError(f"{_setting_name(loc)}: {msg}" if loc else msg) from None
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
