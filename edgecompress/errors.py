"""The one place for the errors edgecompress reports to users.

UserError means the input is wrong and the user can fix it: the CLI prints its message on one line and
exits with code 2. Anything else that escapes is an internal failure (exit 1, --debug for the traceback).
The library's messages name settings (`calibration`, `io_type`), the words a recipe uses too; the CLI shows
the settings a UserError lists as its flags (`--calibration`, `--io-type`).
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input: a one-line message that names what is wrong and how to fix it.

    SETTINGS are the setting names the message mentions, for the CLI to show as its flags.
    """

    exit_code = 2

    def __init__(self, message: str, settings: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.settings = settings

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.settings)  # a child process's error keeps its settings


class MissingExtraError(UserError):
    """A command needs an optional part (the conversion/training side by default), which is not installed."""

    def __init__(self, what: str, module: str, extra: str = "full") -> None:
        super().__init__(
            f"{what} needs {module}, which is not installed: pip install 'edgecompress[{extra}]'"
        )


class WrongResult(UserError):
    """The work ran but its result is wrong (an export whose outputs are NaN where the original's are not).

    One line like bad input, but exit 1: the input was fine, and a wrong result is never a success.
    """

    exit_code = 1


class NativeCrash(UserError):
    """Native code (TensorFlow, a runtime) died by a signal in an isolated child: one line, exit 1."""

    exit_code = 1
