"""Local presence by département over real FastAGI sockets: a Marseille landline gets the
Marseille number (not Lyon's 04 72, which shared its "zone 04" before); a mobile with
area=13008 gets a Bouches-du-Rhône number; without a hint, the least used as before. The pure
part (prefixes, postal codes) is checked on its own."""

from __future__ import annotations

import phonenumbers

from agent.app import Agent
from agent.contact.presence import _FR_ZAB, area_hint, number_area
from tests.conftest import AgentFactory, agi_port
from tests.fake_asterisk import run_session

POOLS = """
[defaults]
timezone = "Europe/Paris"
region = "FR"

[pools.reminders]
purposes = ["reminder"]
numbers = [
  { number = "+33472000003", name = "Clinique Lyon" },
  { number = "+33142000001", name = "Clinique Paris" },
  { number = "+33442000004", name = "Clinique Aix" },
  { number = "+33491000005", name = "Clinique Mars" },
]
"""


async def call(agent: Agent, *args: str) -> dict[str, str]:
    session = await run_session("127.0.0.1", agi_port(agent), args=["reminder", *args])
    return session.variables


def test_areas_of_numbers_and_postal_codes() -> None:
    assert number_area("+33491123456") == number_area("+33442000004") == "FR-13"
    assert number_area("+33472000003") == "FR-69"
    assert number_area("+33612345678") is None  # a mobile has no place
    assert number_area("+33492000000") is None  # 04 92 spans several départements: no guess
    assert number_area("+442071234567") == "+44:20"  # elsewhere: phonenumbers' area code
    assert area_hint("13008") == area_hint("13") == "FR-13"
    assert area_hint("20090") == "FR-2A" and area_hint("20200") == "FR-2B"
    assert area_hint("97400") == "FR-974"
    assert area_hint("99") is None and area_hint("1300") is None and area_hint("") is None


async def test_marseille_landline_gets_a_marseille_number(make_agent: AgentFactory) -> None:
    agent = await make_agent(POOLS)
    # Use the Marseille number once so it is not also the least used: locality decides.
    first = await call(agent, "04 91 11 22 33")
    assert first["CALLERID(num)"] in {"+33491000005", "+33442000004"}
    assert first["TRUSTLINE_REASON"] == "local_number"
    second = await call(agent, "04 91 11 22 34")
    assert {first["CALLERID(num)"], second["CALLERID(num)"]} == {"+33491000005", "+33442000004"}
    lyon = await call(agent, "04 72 99 99 99")
    assert lyon["CALLERID(num)"] == "+33472000003" and lyon["TRUSTLINE_REASON"] == "local_number"


async def test_mobile_with_an_area_gets_a_number_of_that_departement(
    make_agent: AgentFactory,
) -> None:
    agent = await make_agent(POOLS)
    got = await call(agent, "0612345678", "CASE-1", "area=13008")
    assert got["CALLERID(num)"] in {"+33491000005", "+33442000004"}
    assert got["TRUSTLINE_REASON"] == "local_area"
    lyon = await call(agent, "0612345678", "", "area=69")
    assert lyon["CALLERID(num)"] == "+33472000003" and lyon["TRUSTLINE_REASON"] == "local_area"


async def test_without_a_hint_the_least_used(make_agent: AgentFactory) -> None:
    agent = await make_agent(POOLS)
    seen = [await call(agent, "0612345678") for _ in range(4)]
    assert {r["TRUSTLINE_REASON"] for r in seen} == {"least_used"}
    assert len({r["CALLERID(num)"] for r in seen}) == 4  # spread over the pool
    # A hint that is not a postal code or a département is ignored, never guessed.
    odd = await call(agent, "0612345678", "", "area=Marseille")
    assert odd["TRUSTLINE_REASON"] == "least_used"


def test_french_geographic_numbers_get_the_area_a_full_parse_gives() -> None:
    """French landlines are read without phonenumbers (a first start reads 100,000 of
    them): the département is the one the parsed national number names."""
    for zab in ("142", "491", "472", "299", "561", "492", "549", "100", "599", "388"):
        for rest in ("000000", "123456", "999999"):
            e164 = f"+33{zab}{rest}"
            national = phonenumbers.national_significant_number(phonenumbers.parse(e164, None))
            departement = _FR_ZAB.get(national[:3])
            assert number_area(e164) == (f"FR-{departement}" if departement else None)
    assert number_area("+33 4 91 12 34 56") == "FR-13"  # not E.164 as stored: parsed
