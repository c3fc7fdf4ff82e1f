"""Reputation providers: ask "is this number labelled spam?" of an outside service or list.

May: call the provider over HTTP (one number per request), parse its answer, read a vendor CSV.
Must not: raise anything but ``ProviderError`` from ``lookup`` (a slow, failing or malformed
provider is the scanner's problem to retry, never a caller's), pace itself (the scanner
holds the rate limit), or log an auth header.
"""

from __future__ import annotations

import csv
import io
import json
import math
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import aiohttp

from agent import phone
from agent.errors import BadRequest
from agent.outcomes.config import ProviderConfig

DEFAULT_FLAG_LABELS = ProviderConfig.model_fields["flag_labels"].default


@dataclass(frozen=True, slots=True)
class Verdict:
    number: str
    score: float | None
    label: str | None
    flagged: bool


class ProviderError(Exception):
    """The provider could not answer now; try this number again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds the provider asked us to wait (429)


class ReputationProvider(Protocol):
    name: str

    async def lookup(self, number: str) -> Verdict: ...

    async def close(self) -> None: ...


def is_flagged(score: float | None, label: str | None, config: ProviderConfig | None) -> bool:
    labels = config.flag_labels if config is not None else DEFAULT_FLAG_LABELS
    if label is not None and label.strip().lower() in {x.lower() for x in labels}:
        return True
    if score is None or config is None:
        return False
    if config.flag_score_at_least is not None and score >= config.flag_score_at_least:
        return True
    return config.flag_score_at_most is not None and score <= config.flag_score_at_most


def dig(document: Any, path: str) -> Any:
    """The value at a dotted path (list items by index); None when any step is missing."""
    for step in path.split("."):
        if isinstance(document, dict):
            document = document.get(step)
        elif isinstance(document, list) and step.isdigit() and int(step) < len(document):
            document = document[int(step)]
        else:
            return None
    return document


class HttpJsonProvider:
    MAX_BODY = 256 * 1024

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name
        self._auth = config.auth_value()  # read once; a bad file fails at start-up
        self._session: aiohttp.ClientSession | None = None

    async def lookup(self, number: str) -> Verdict:
        cfg = self.config
        url = cfg.url.replace("{number}", urllib.parse.quote(number, safe="")).replace(
            "{digits}", number.lstrip("+")
        )
        headers = {"Accept": "application/json"}
        if self._auth is not None:
            headers[cfg.auth_header] = self._auth
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=cfg.timeout_seconds)
            )
        where = phone.mask(number)
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
                if resp.status == 429:
                    wait = _retry_after(resp.headers.get("Retry-After"))
                    raise ProviderError(f"{self.name}: rate limited (429) on {where}", wait)
                if resp.status != 200:
                    raise ProviderError(f"{self.name}: HTTP {resp.status} on {where}")
                body = await resp.content.read(self.MAX_BODY + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ProviderError(f"{self.name}: {type(exc).__name__} on {where}") from None
        if len(body) > self.MAX_BODY:
            raise ProviderError(f"{self.name}: answer over {self.MAX_BODY} bytes on {where}")
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ProviderError(f"{self.name}: answer is not JSON on {where}") from None
        return self._verdict(number, document)

    def _verdict(self, number: str, document: Any) -> Verdict:
        cfg = self.config
        score = dig(document, cfg.score_path) if cfg.score_path else None
        label = dig(document, cfg.label_path) if cfg.label_path else None
        if score is not None and (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not math.isfinite(score)
        ):
            raise ProviderError(f"{self.name}: score at {cfg.score_path} is not a number")
        if label is not None and not isinstance(label, str):
            raise ProviderError(f"{self.name}: label at {cfg.label_path} is not text")
        if score is None and label is None:
            raise ProviderError(f"{self.name}: answer has neither score nor label")
        fscore = None if score is None else float(score)
        return Verdict(number, fscore, label, is_flagged(fscore, label, cfg))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _retry_after(value: str | None) -> float | None:
    """Retry-After is delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# -- vendor lists ------------------------------------------------------------------------------


def parse_vendor_csv(text: str, region: str, config: ProviderConfig | None = None) -> list[Verdict]:
    """A vendor's list: a header row with ``number`` and optionally ``score`` and ``label``.

    A row with neither score nor label is a listing: flagged. Raises BadRequest naming every
    bad line; nothing is taken from a file with a bad line.
    """
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "number" not in fields:
        raise BadRequest("vendor list: the header row must name a 'number' column")
    reader.fieldnames = fields
    verdicts, problems = [], []
    for row in reader:
        line = reader.line_num
        raw = (row.get("number") or "").strip()
        try:
            number = phone.to_e164(raw, region, require_valid=False)
        except phone.InvalidNumber as exc:
            problems.append(f"line {line}: {phone.mask(raw)} is not a number ({exc})")
            continue
        score_text = (row.get("score") or "").strip()
        label = (row.get("label") or "").strip() or None
        score = None
        if score_text:
            try:
                score = float(score_text)
            except ValueError:
                problems.append(f"line {line}: score {score_text!r} is not a number")
                continue
        flagged = True if score is None and label is None else is_flagged(score, label, config)
        verdicts.append(Verdict(number, score, label, flagged))
    if problems:
        raise BadRequest("vendor list has bad lines, nothing imported:\n  " + "\n  ".join(problems))
    return verdicts
