"""Logging set-up: text or JSON lines, and a last line of defence for what a record may hold.

Code masks numbers itself (agent.phone.mask); this module catches what slips through, so a full
patient number never reaches a log file, whatever way it is written: ``+33612345678``,
``06 12 34 56 78``, ``06.12.34.56.78``, ``06-12-34-56-78``, glued to letters (``id0612345678``)
or longer than 15 digits. Asterisk unique ids (``1795344877.17``) and IPv4 addresses are kept.
Control characters (a CR or LF in a value Asterisk relayed) are escaped, so a value cannot
forge a log line, and every record is one line (tracebacks included).
"""

from __future__ import annotations

import json
import logging
import re
from typing import TextIO

# A run of 7 digits or more, in groups joined by single separators (space, dot, dash, slash,
# the "(0)" of +33 (0)1 ...). Letters around it do not protect it.
_NUMBER = re.compile(r"\+?(?:\(\d+\)\s?)?\d(?:[ .\-/]?(?:\(\d+\)\s?)?\d)*")
_UNIQUEID = re.compile(r"\d{9,11}\.\d{1,9}")
_IPV4 = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?: \d{2})?")
_DIGITS_TO_MASK = 7
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")


def _mask(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = [ch for ch in text if ch.isdigit()]
    if len(digits) < _DIGITS_TO_MASK:
        return text
    if _UNIQUEID.fullmatch(text) or _DATE.fullmatch(text) or _IPV4.fullmatch(text):
        return text
    return "***" + "".join(digits[-4:])


def _escape(match: re.Match[str]) -> str:
    ch = match.group(0)
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, f"\\x{ord(ch):02x}")


def mask_numbers(text: str) -> str:
    return _NUMBER.sub(_mask, text)


def clean(text: str) -> str:
    """What a log line may show of ``text``: numbers masked, control characters escaped."""
    return _CONTROL.sub(_escape, mask_numbers(text))


class MaskNumbers(logging.Filter):
    """Masks numbers and escapes control characters in the message (and traceback) of every
    record, before any handler or formatter sees it."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        # Tracebacks are text too (a KeyError names its key): format them here, masked; the
        # formatter flattens them to one line.
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_numbers(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_numbers(record.stack_info)
        return True


class OneLineFormatter(logging.Formatter):
    """The usual text format, on one line: a traceback follows the message with its line
    breaks shown as ``\\n``."""

    def format(self, record: logging.LogRecord) -> str:
        # The message and traceback were masked by MaskNumbers; the time stays as it is.
        return _CONTROL.sub(_escape, super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and exc when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": clean(record.getMessage()),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = mask_numbers(record.exc_text)
        if record.stack_info:
            out["stack"] = mask_numbers(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "INFO", stream: TextIO | None = None, fmt: str = "text") -> None:
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskNumbers())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosqlite logs every statement with its parameters at DEBUG: numbers and hashes.
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
