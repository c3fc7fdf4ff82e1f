"""Keyed hashes of patient numbers are stored (opt-outs, audit rows, callbacks, the opt-out
copy): a release must compute the very same value, or an upgrade forgets who opted out."""

from __future__ import annotations

import hashlib
import hmac

from agent import phone


def test_a_keyed_hash_is_hmac_sha256_of_the_e164_number() -> None:
    for key in (b"k" * 32, bytes(range(32)), b"\xff" * 64):
        for number in ("+33612345678", "+262692123456", "+14155550123"):
            want = hmac.new(key, number.encode("ascii"), hashlib.sha256).hexdigest()
            assert phone.keyed_hash(key, number) == want


def test_two_keys_never_share_a_cached_state() -> None:
    one, two = (
        phone.keyed_hash(b"a" * 32, "+33612345678"),
        phone.keyed_hash(b"b" * 32, "+33612345678"),
    )
    assert one != two
