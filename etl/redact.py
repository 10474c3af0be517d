"""Credentials never reach a log line or an error message: their values are masked on the way out.

The values are those of this process's credential variables. Libraries we cannot silence without
losing their use print them: with `--verbose`, botocore's debug log shows every request's
`Authorization` header, which holds the access key id, and error bodies that echo it.
"""

from __future__ import annotations

import logging
import os

CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# Real keys are 16 characters and more; masking a short placeholder such as `test` would garble
# every line that happens to contain the word.
MIN_MASKED_LENGTH = 8
MASK = "***"


def redact(text: str) -> str:
    for name in CREDENTIAL_VARIABLES:
        value = os.environ.get(name, "")
        if len(value) >= MIN_MASKED_LENGTH:
            text = text.replace(value, MASK)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats as usual (message, traceback, stack), then masks credential values."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
