"""SMS templates: the placeholders a message may carry, checked and filled. Pure, no I/O.

A pre-call SMS tells the patient who will call and from which number, never why: a phone
screen is read by others. Templates may use only ``{centre}``, ``{number}``, ``{date}`` and
``{time}``; anything else (a case reference, a name, a format spec) is refused by the config
check. Provider body templates (the generic HTTP provider) use ``${to}``, ``${sender}`` and
``${text}`` instead, so JSON braces need no escaping.
"""

from __future__ import annotations

import json
import string
from urllib.parse import quote

SMS_PLACEHOLDERS = ("centre", "number", "date", "time")
BODY_PLACEHOLDERS = ("to", "sender", "text")
MAX_SMS_CHARS = 459  # three concatenated GSM-7 segments (153 each)


def template_problem(text: str) -> str | None:
    """Why an SMS template is refused, or None."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        return f"template is not well formed ({exc}); write a literal brace as {{{{ or }}}}"
    allowed = ", ".join("{" + p + "}" for p in SMS_PLACEHOLDERS)
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in SMS_PLACEHOLDERS or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "")
            shown += (f":{spec}" if spec else "") + "}"
            return (
                f"placeholder {shown} is not allowed: an SMS carries no medical or personal "
                f"detail, only {allowed}"
            )
    if not text.strip():
        return "template is empty"
    if len(text) > MAX_SMS_CHARS:
        return f"template is {len(text)} characters; keep it under {MAX_SMS_CHARS} (3 SMS)"
    return None


def render(text: str, *, centre: str, number: str, date: str, time: str) -> str:
    return text.format(centre=centre, number=number, date=date, time=time)


def body_problem(text: str) -> str | None:
    """Why a provider body template is refused, or None."""
    try:
        names = {
            m.group("named") or m.group("braced")
            for m in string.Template.pattern.finditer(text)
            if m.group("invalid") is None and (m.group("named") or m.group("braced"))
        }
        invalid = [m for m in string.Template.pattern.finditer(text) if m.group("invalid")]
    except (ValueError, TypeError) as exc:
        return f"body template is not well formed ({exc})"
    if invalid:
        return "body template has a lone '$'; write a literal dollar as $$"
    unknown = sorted(names - set(BODY_PLACEHOLDERS))
    if unknown:
        return f"body placeholder ${{{unknown[0]}}} is unknown; use ${{to}}, ${{sender}}, ${{text}}"
    if "text" not in names or "to" not in names:
        return "body template must place ${to} and ${text}"
    return None


def fill_body(text: str, content_type: str, *, to: str, sender: str, body: str) -> str:
    """The provider request body: values escaped for the content type (JSON string contents,
    or URL-encoded form values), so a message cannot break the request's syntax."""
    if content_type == "application/json":

        def esc(v: str) -> str:
            return json.dumps(v)[1:-1]

    else:

        def esc(v: str) -> str:
            return quote(v, safe="")

    return string.Template(text).substitute(to=esc(to), sender=esc(sender), text=esc(body))
