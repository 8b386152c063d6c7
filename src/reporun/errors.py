"""One root exception, a subclass per part. The docstring is the default message."""

from __future__ import annotations


class ReporunError(Exception):
    """reporun failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidInput(ReporunError):
    """The request is not valid."""

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class RepoUnusable(InvalidInput):
    """The repository cannot be used: a local path that is no directory, no git repository, or
    one with no commits (422, naming `repo`)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, field="repo")


class NotOffered(InvalidInput):
    """The request names something this server does not offer, such as a runtime (422, naming
    the field)."""


class ConfigError(ReporunError):
    """The configuration is not valid."""


class NotFound(ReporunError):
    """No such job."""


class IllegalTransition(ReporunError):
    """The job cannot move to that state."""


class AuthError(ReporunError):
    """Authentication failed."""


class Unauthorized(AuthError):
    """A valid bearer token is required."""


class Forbidden(AuthError):
    """The token does not carry the role this call needs."""

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class QuotaExceeded(ReporunError):
    """Too many jobs; try again later."""

    def __init__(self, message: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IssuerUnavailable(ReporunError):
    """The identity provider is not answering."""


class CheckoutError(ReporunError):
    """The repository could not be cloned."""


class SandboxError(ReporunError):
    """The sandbox could not start the job."""


class ClientError(ReporunError):
    """A client command could not get what it asked for: the server could not be reached, it
    answered with an error (`ApiError`), or signing in failed (`LoginError`)."""


class BrokerError(ReporunError):
    """The Kafka broker is not answering."""
