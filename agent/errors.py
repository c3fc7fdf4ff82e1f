"""The one error hierarchy of the core.

Edges translate these: the FastAGI server to channel variables, the HTTP API to status codes,
the CLI to exit codes. Expected outcomes (a pool exhausted, a caller blocked) are not errors;
they are values returned by services.
"""


class TrustlineError(Exception):
    """Base of every error the core raises on purpose."""


class ConfigError(TrustlineError):
    """The configuration (pools.toml or settings) is invalid.

    ``problems`` holds one human-readable line per problem, each naming its location.
    """

    def __init__(self, source: str, problems: list[str], hint: str = "") -> None:
        self.source = source
        self.problems = problems
        self.hint = hint  # what the admin can do meanwhile (shown after the problems)
        super().__init__(f"{source}: " + "; ".join(problems))


class BadRequest(TrustlineError):
    """A caller (dialplan, CLI, API) passed arguments that cannot be served."""


class BadData(TrustlineError):
    """An argument is well-formed for the command but its value is not valid data (a phone
    number that is not a number)."""


class UnknownNumber(TrustlineError):
    """A number that is not one of ours was named where one of ours is required."""


class StoreError(TrustlineError):
    """The store failed or is unreachable."""


class StoreNotFound(StoreError):
    """No store where one was expected: admin commands never create one."""


class KeyringError(TrustlineError):
    """The recordings keyring is missing, unsafe or does not hold the needed key."""


class RecordingError(TrustlineError):
    """A recording file is damaged, truncated, tampered with or cannot be decrypted."""
