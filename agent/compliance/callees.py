"""Callees as compliance reads them, kept: numbers, keyed hashes and time zone per callee text.

Reading a number is phonenumbers' dearest step, so each callee text is read once (numbers.read)
and kept, the 65,536 used last. Each is kept as a plain tuple of strings, which the cycle
collector stops tracking after its first passes: a cache of objects (and of keys holding the
service) made every full collection walk about 130,000 more of them, a 15-35 ms pause of the
event loop every few seconds under load. The hashes only an attempt limit needs are computed
the first time one asks, then kept with it. No I/O, no logging, no policy.
"""

from __future__ import annotations

from collections import OrderedDict

from agent import phone
from agent.compliance import numbers

SIZE = 65536

# (e164 as compliance reads it, its keyed hash (the opt-out key), time zone, plain E.164 as
# call_audit holds it now, every E.164 form call_audit may hold, their hashes (None: not yet),
# the hash of plain (None: not yet)). Most callees have one form, their E.164: its hash is the
# opt-out key already.
Entry = tuple[str, str, str, str, tuple[str, ...], tuple[str, ...] | None, str | None]


class Callees:
    def __init__(self, hash_key: bytes, size: int = SIZE) -> None:
        self._hash_key = hash_key
        self._size = size
        self._kept: OrderedDict[tuple[str, str], Entry | None] = OrderedDict()

    def get(self, callee: str, region: str, fallback_zone: str) -> Entry | None:
        """The callee as read once; None for an extension or junk."""
        key = (callee, region)
        kept = self._kept
        try:
            entry = kept[key]
        except KeyError:
            pass
        else:
            kept.move_to_end(key)
            return entry
        entry = self._read(callee, region, fallback_zone)
        kept[key] = entry
        if len(kept) > self._size:
            kept.popitem(last=False)
        return entry

    def _read(self, callee: str, region: str, fallback_zone: str) -> Entry | None:
        try:
            read = numbers.read(callee, region, fallback_zone)
        except phone.InvalidNumber:
            return None
        # One keyed hash per callee (the opt-out key); those of the audit forms only when an
        # attempt limit needs them (audit_hashes).
        hashed = phone.keyed_hash(self._hash_key, read.e164)
        hashes = (hashed,) if read.audit_forms == (read.e164,) else None
        written = hashed if read.plain == read.e164 else None
        return (read.e164, hashed, read.zone, read.plain, read.audit_forms, hashes, written)

    def audit_hashes(self, callee: str, region: str, entry: Entry) -> tuple[str, ...]:
        """The hashes the callee's call_audit rows may carry (for counting attempts)."""
        hashes = entry[5]
        if hashes is None:
            hashes = tuple(sorted({phone.keyed_hash(self._hash_key, f) for f in entry[4]}))
            kept = self._kept.get((callee, region))
            if kept is not None:  # kept with what else was computed since
                self._kept[(callee, region)] = (*kept[:5], hashes, kept[6])
        return hashes

    def written(self, callee: str, region: str, entry: Entry) -> str:
        """The hash of the form this callee's audit row carries now (its plain E.164)."""
        written = entry[6]
        if written is None:
            written = phone.keyed_hash(self._hash_key, entry[3])
            kept = self._kept.get((callee, region))
            if kept is not None:
                self._kept[(callee, region)] = (*kept[:6], written)
        return written
