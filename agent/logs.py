"""Logging set-up: one format, and a last line of defence that masks phone numbers.

Code masks numbers itself (agent.phone.mask); this filter catches what slips through, so a
full patient number never reaches a log file. Asterisk unique ids (digits.digits) are kept.
"""

from __future__ import annotations

import logging
import re
from typing import TextIO

_NUMBER = re.compile(r"(?<![\w.])\+?\d{7,15}(?![\w.])")


def _mask(match: re.Match[str]) -> str:
    return "***" + match.group(0)[-4:]


class MaskNumbers(logging.Filter):
    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _NUMBER.sub(_mask, message)
        if masked != message:
            record.msg, record.args = masked, None
        # Tracebacks are text too (a KeyError names its key): format them here, masked; the
        # handler's formatter uses exc_text as it is.
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _NUMBER.sub(_mask, record.exc_text)
        if record.stack_info:
            record.stack_info = _NUMBER.sub(_mask, record.stack_info)
        return True


def setup_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskNumbers())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosqlite logs every statement with its parameters at DEBUG: numbers and hashes.
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
