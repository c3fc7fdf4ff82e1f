"""Block and allow list entries: normalisation to E.164 and matching, pure (no I/O).

An entry is an exact number (stored in E.164) or an international prefix ending in ``*``
(``+44*``). Numbers go through ``agent.phone`` (phonenumbers); this module must not log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers

from agent import phone

PREFIX_MARK = "*"
_SEPARATORS = str.maketrans("", "", " .-()/\t")


def normalise_entry(text: str, region: str | None = None) -> str:
    """An admin's entry as stored: ``+33612345678`` or ``+44*``. Raises ValueError.

    Without ``region`` only international forms (``+``/``00``) are accepted, so an entry never
    depends on which pool's region happens to read it.
    """
    raw = text.strip()
    if raw.endswith(PREFIX_MARK):
        return _normalise_prefix(raw[: -len(PREFIX_MARK)])
    if region is None and not raw.startswith(("+", "00")):
        raise ValueError(f"{text!r}: write the number in international form (+33..., +1...)")
    try:
        return phone.to_e164(raw, region or "ZZ", require_valid=False)
    except phone.InvalidNumber as exc:
        raise ValueError(f"{text!r} is not a possible phone number ({exc})") from None


def _normalise_prefix(body: str) -> str:
    # "+33 (0)6*": the "(0)" is the trunk digit dialled only nationally, never in E.164.
    digits = body.replace("(0)", "").translate(_SEPARATORS)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if not digits.startswith("+") or not digits[1:].isdigit() or len(digits) > 16:
        raise ValueError(f"{body}*: a prefix is '+' and up to 15 digits, then '*' (e.g. +44*)")
    national = digits[1:]
    # A prefix must start with a real country calling code, or it could never match anything.
    if not any(
        int(national[:n]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE
        for n in (1, 2, 3)
        if len(national) >= n
    ):
        raise ValueError(f"{body}*: does not start with a country calling code")
    return digits + PREFIX_MARK


def is_prefix(entry: str) -> bool:
    return entry.endswith(PREFIX_MARK)


@dataclass(frozen=True, slots=True)
class ListMatcher:
    """Exact numbers and prefixes of one list; the longest matching entry wins."""

    exact: frozenset[str] = frozenset()
    prefixes: frozenset[str] = frozenset()  # without the trailing '*'

    @classmethod
    def of(cls, entries: Iterable[str]) -> ListMatcher:
        exact, prefixes = set(), set()
        for entry in entries:
            if is_prefix(entry):
                prefixes.add(entry[: -len(PREFIX_MARK)])
            else:
                exact.add(entry)
        return cls(frozenset(exact), frozenset(prefixes))

    def match(self, e164: str | None) -> str | None:
        """The entry that matches this E.164 number, or None."""
        if not e164:
            return None
        if e164 in self.exact:
            return e164
        if self.prefixes:
            for end in range(len(e164), 1, -1):
                if e164[:end] in self.prefixes:
                    return e164[:end] + PREFIX_MARK
        return None

    def __len__(self) -> int:
        return len(self.exact) + len(self.prefixes)
