"""HTTP routes of patient contact: ``GET /vcard/<pool>.vcf``.

Public (no token) when ``[contact.vcard] enabled = true``: a patient opens it from the SMS
link. It shows only what the patient's phone already shows (the centre's name, its caller IDs
and its numbers to call back); anything else, and every pool while disabled, is 404 (so the
list of pools does not leak). Reads the current config on each request; no I/O beyond that.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from agent.contact.config import ContactConfig, inbound_numbers

if TYPE_CHECKING:
    from agent.config import Config

_POOL = re.compile(r"[A-Za-z0-9_-]{1,32}")
VCARD_TYPE = "text/vcard"


def pool_card(config: Config, contact: ContactConfig, pool_name: str) -> str | None:
    """The vCard of ``pool_name``, or None when the card is not served."""
    pool = config.pools.get(pool_name)
    if not contact.vcard.enabled or pool is None or pool.reserve:
        return None
    outbound = [n.number for n in pool.numbers if n.active]
    if pool.fallback and pool.fallback not in outbound:
        outbound.append(pool.fallback)  # presented when the pool is exhausted
    inbound = inbound_numbers(contact, pool_name, pool.rules.region)
    centre = contact.centre or (pool.numbers[0].name if pool.numbers else pool_name)
    from agent.contact import vcard  # vobject and its dateutil, pytz: only when asked

    return vcard.build(centre, pool_name, outbound, inbound)


def vcard_routes(
    config: Callable[[], Config], contact: Callable[[], ContactConfig]
) -> list[web.RouteDef]:
    async def get_vcard(request: web.Request) -> web.Response:
        name = request.match_info["pool"]
        text = pool_card(config(), contact(), name) if _POOL.fullmatch(name) else None
        if text is None:
            raise web.HTTPNotFound()
        return web.Response(
            text=text,
            content_type=VCARD_TYPE,
            charset="utf-8",
            headers={
                "Content-Disposition": f'inline; filename="{name}.vcf"',
                "Cache-Control": "public, max-age=300",
            },
        )

    return [web.get(r"/vcard/{pool}.vcf", get_vcard)]
