"""Exceptions raised by usage-collector.

Our exception hierarchy::

    CollectorError
     +-- ConfigError            bad setting or CLI input (exit status 2)
     +-- ApiError               the OpenAI API answered something we cannot use
     |    +-- RetriableApiError 429, 5xx, timeouts, connection errors (retried by tenacity)
     |    +-- FatalApiError     any other 4xx, malformed bodies, pagination contract violations
     |         +-- AuthError    401/403: an Admin key is required
     |         +-- PaginationError  repeated cursor, has_more without next_page
     |         +-- UnreachableError  the API host refuses connections or does not resolve
     +-- StoppedError           a stop (SIGTERM, the run deadline) came before the next request
     +-- SinkError              the sink refused or lost documents (carries the failed items)
     +-- LeaseHeldError         another run holds this organization's lease

No exception message ever contains a secret: the Admin key and Elasticsearch credentials are
``SecretStr`` values and URLs are logged without query strings or credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class CollectorError(Exception):
    """Base class of every error usage-collector raises on purpose."""


class ConfigError(CollectorError):
    """A setting or command-line value is invalid; the message names it and what is allowed."""


class ApiError(CollectorError):
    """The OpenAI API answered with something the collector cannot use."""

    def __init__(self, message: str, *, status_code: int | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.url = url


class RetriableApiError(ApiError):
    """A transient failure (429, 5xx, timeout, connection error); retried with backoff."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        url: str | None = None,
        retry_after: float | None = None,
        connect: bool = False,
    ) -> None:
        super().__init__(message, status_code=status_code, url=url)
        self.retry_after = retry_after
        #: the connection itself failed (refused, no such host, connect timeout): its own, short retry budget
        self.connect = connect


class StoppedError(CollectorError):
    """A stop was requested (SIGTERM, the run's deadline): no further request is made."""


class FatalApiError(ApiError):
    """A failure that retrying cannot fix (4xx other than 429, an unparseable body)."""


class AuthError(FatalApiError):
    """401 or 403: the key is missing, wrong, or not an Admin key."""


class PaginationError(FatalApiError):
    """The API broke the pagination contract (a repeated cursor, has_more without next_page)."""


class UnreachableError(FatalApiError):
    """The API host refused every connection or did not resolve, within the short connect budget: the same
    for every stream of the organization, so they all stop."""


class SinkError(CollectorError):
    """The sink did not acknowledge every document of a window; the checkpoint did not move."""

    def __init__(self, message: str, errors: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (str(self), self.errors))


class LeaseHeldError(CollectorError):
    """Another run holds the lease of this organization."""

    def __init__(self, message: str, *, holder: str, expires_at: float) -> None:
        super().__init__(message)
        self.holder = holder
        self.expires_at = expires_at

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_lease_error, (str(self), self.holder, self.expires_at))


def _rebuild_lease_error(message: str, holder: str, expires_at: float) -> LeaseHeldError:
    return LeaseHeldError(message, holder=holder, expires_at=expires_at)
