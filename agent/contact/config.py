"""The ``[contact]`` section of pools.toml: centre name, pins, SMS provider and templates,
vCard, per-pool overrides.

Validated with the rest of the file (agent/config.py attaches it and calls ``problems`` for
the checks that need the pools); swapped whole on reload. Secrets are never here: providers
name a secret *file*, read when a message is sent. No I/O, no live state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from agent import phone
from agent.contact.templates import body_problem, template_problem

Loc = tuple[int | str, ...]


def _template(text: str) -> str:
    problem = template_problem(text)
    if problem:
        raise ValueError(problem)
    return text


# Checked one by one, so a problem is reported at its own line (contact.templates.<purpose>).
Template = Annotated[str, AfterValidator(_template)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TwilioProvider(_Strict):
    """Twilio Programmable Messaging (POST /2010-04-01/Accounts/{sid}/Messages.json, form
    fields To, From or MessagingServiceSid, Body; HTTP Basic with the account SID and the
    auth token)."""

    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token_file: str = Field(min_length=1)
    messaging_service_sid: str | None = Field(None, pattern=r"^MG[0-9a-fA-F]{32}$")
    base_url: str = "https://api.twilio.com"


class HttpProvider(_Strict):
    """Any HTTP SMS gateway: a URL, a secret from a file, a body template."""

    url: str = Field(pattern=r"^https?://")
    auth: Literal["bearer", "basic", "header", "none"] = "bearer"
    auth_file: str | None = None  # bearer: the token; basic: "user:password"; header: value
    auth_header: str = Field("Authorization", pattern=r"^[A-Za-z0-9-]{1,64}$")
    content_type: Literal["application/json", "application/x-www-form-urlencoded"] = (
        "application/json"
    )
    body: str = '{"to": "${to}", "from": "${sender}", "text": "${text}"}'

    @field_validator("body")
    @classmethod
    def _body(cls, v: str) -> str:
        problem = body_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _secret(self) -> HttpProvider:
        if self.auth != "none" and not self.auth_file:
            raise ValueError(f"auth = {self.auth!r} needs auth_file (the secret is read from it)")
        return self


class SmsSection(_Strict):
    provider: Literal["twilio", "http"]
    sender: str = Field(min_length=1, max_length=16)  # E.164 or an alphanumeric sender ID
    twilio: TwilioProvider | None = None
    http: HttpProvider | None = None
    timeout_seconds: StrictFloat = Field(10.0, gt=0, le=120, allow_inf_nan=False)
    max_attempts: StrictInt = Field(8, ge=1, le=100)

    @model_validator(mode="after")
    def _provider(self) -> SmsSection:
        if getattr(self, self.provider) is None:
            raise ValueError(f"provider = {self.provider!r} needs a [contact.sms.{self.provider}]")
        return self


class ContactPool(_Strict):
    pin_hours: StrictFloat | StrictInt | None = Field(None, gt=0, le=24 * 14)
    sms_lead_minutes: StrictInt | None = Field(None, ge=0, le=24 * 60)
    # Numbers patients may call that are not caller IDs (a switchboard): listed in the vCard.
    inbound: list[str] = Field(default_factory=list)


class VcardSection(_Strict):
    enabled: StrictBool = False  # GET /vcard/<pool>.vcf answers (without a token) only then


class ContactConfig(_Strict):
    centre: str = Field("", max_length=64)
    pin_hours: StrictFloat | StrictInt = Field(24, gt=0, le=24 * 14)
    sms_lead_minutes: StrictInt = Field(20, ge=0, le=24 * 60)
    date_format: str = "%d/%m"
    time_format: str = "%Hh%M"
    templates: dict[str, Template] = Field(default_factory=dict)  # purpose -> SMS text
    sms: SmsSection | None = None
    vcard: VcardSection = VcardSection()
    pools: dict[str, ContactPool] = Field(default_factory=dict)

    def pin_hours_for(self, pool: str) -> float:
        own = self.pools.get(pool)
        return float(own.pin_hours if own and own.pin_hours is not None else self.pin_hours)

    def lead_minutes_for(self, pool: str) -> int:
        own = self.pools.get(pool)
        return (
            own.sms_lead_minutes
            if own and own.sms_lead_minutes is not None
            else (self.sms_lead_minutes)
        )


def problems(
    contact: ContactConfig, pools: Iterable[str], purposes: Iterable[str], region: str
) -> list[tuple[Loc, str]]:
    """Checks that need the rest of the file: pools and purposes named here exist, numbers
    parse. Returned as (location under [contact], message) for agent/config.py to report."""
    found: list[tuple[Loc, str]] = []
    pool_names, purpose_names = set(pools), set(purposes)
    for name, pool in contact.pools.items():
        if name not in pool_names:
            found.append((("pools", name), f"no pool {name!r} in [pools]"))
        for i, number in enumerate(pool.inbound):
            try:
                phone.to_e164(number, region)
            except phone.InvalidNumber as exc:
                found.append((("pools", name, "inbound", i), f"{number!r}: {exc}"))
    for purpose in contact.templates:
        if purpose not in purpose_names:
            found.append((("templates", purpose), f"no pool serves purpose {purpose!r}"))
    if contact.templates and not contact.centre:
        found.append((("centre",), "SMS templates need the centre's name (centre = ...)"))
    return found


def contact_of(config: Any) -> ContactConfig:
    """The [contact] section of a loaded Config (defaults when the file has none)."""
    section = getattr(getattr(config, "raw", None), "contact", None)
    return section if isinstance(section, ContactConfig) else ContactConfig()


def inbound_numbers(contact: ContactConfig, pool: str, region: str) -> list[str]:
    own = contact.pools.get(pool)
    return [phone.to_e164(n, region) for n in own.inbound] if own else []
