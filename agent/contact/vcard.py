"""The centre's contact card for one pool: vCard 3.0, built by ``vobject``.

Pure: takes names and numbers, returns text. Version 3.0 because both iOS Contacts and
Android's importer read it fully (4.0 is still partial on Android); ``TEL;TYPE=WORK,VOICE``
for every number the patient may see or call, ``PREF`` on the numbers to call back,
``ORG`` + ``X-ABShowAs:COMPANY`` so iOS files it as a company. Numbers are E.164, which
every phone matches against a national caller ID. Must not hold or list a patient number.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import vobject

# A stable UID per centre and pool: saving the card twice updates one contact.
_NAMESPACE = uuid.UUID("6b7c3e1e-8a57-4b54-9d4c-0c3f1a1d2e10")


def build(centre: str, pool: str, outbound: Sequence[str], inbound: Sequence[str]) -> str:
    """vCard text (CRLF lines, folded at 75 octets as RFC 2426 says)."""
    card = vobject.vCard()
    card.add("n").value = vobject.vcard.Name(family=centre)
    card.add("fn").value = centre
    card.add("org").value = [centre]
    card.add("x-abshowas").value = "COMPANY"
    card.add("uid").value = str(uuid.uuid5(_NAMESPACE, f"{centre}/{pool}"))
    seen: set[str] = set()
    for number in inbound:
        if number not in seen:
            seen.add(number)
            tel = card.add("tel")
            tel.value = number
            tel.type_param = ["WORK", "VOICE", "PREF"]
    for number in outbound:
        if number not in seen:
            seen.add(number)
            tel = card.add("tel")
            tel.value = number
            tel.type_param = ["WORK", "VOICE"]
    text: str = card.serialize()
    return text
