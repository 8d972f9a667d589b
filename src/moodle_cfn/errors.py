"""The exception types that turn into a one-line error message and a non-zero exit code."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError
from urllib3.exceptions import HTTPError as Urllib3Error

EXIT_BAD_INPUT = 2
EXIT_AWS_FAILED = 4
# Everything an AWS call can raise that is about the service or the network, not about moodle-cfn's code:
# botocore's own errors, an answer botocore cannot parse (moto and proxies return HTML 500 pages;
# ResponseParserError is not a BotoCoreError), and urllib3 errors that escape botocore's wrapping.
AWS_ERRORS: tuple[type[BaseException], ...] = (ClientError, BotoCoreError, ResponseParserError, Urllib3Error)
# Around one AWS call, also a socket error (OSError) of the connection itself.
CALL_ERRORS: tuple[type[BaseException], ...] = (*AWS_ERRORS, OSError)
LONGEST_REASON = 200


class InputError(Exception):
    """Bad operator input: names the file, the key (when there is one) and the reason."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, source: str, reason: str, key: str | None = None) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.source}: {self.key}" if self.key else self.source
        return f"{where}: {self.reason}"


class AwsFailure(InputError):
    """An AWS call failed for a reason that is not the operator's input (an unexpected answer, the network)."""

    exit_code = EXIT_AWS_FAILED


def one_line(error: BaseException) -> str:
    """An exception's message on one line, cut short (a parser error can carry a whole HTML page)."""
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) > LONGEST_REASON:
        text = text[: LONGEST_REASON - 3] + "..."
    return f"{type(error).__name__}: {text}"
