"""The CNAM registry: what each number should show (pools.toml), what the carrier was asked
to show and when (recorded by an admin), and where that stands.

May: read and write cnam_provisioned through ContactRepo. Must not: contact a carrier (names
are provisioned by hand at the carrier's portal; this records and checks), or decide the rules
(agent.contact.cnam does).
"""

from __future__ import annotations

from agent import phone
from agent.clock import Clock
from agent.config import Config
from agent.contact import cnam
from agent.contact.repo import ContactRepo
from agent.errors import BadData, UnknownNumber
from agent.store import Database


class CnamRegistry:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._repo = ContactRepo(db)
        self._clock = clock

    async def set_provisioned(
        self, config: Config, number_text: str, name: str, on: float, *, force: bool = False
    ) -> cnam.CnamStatus:
        try:
            number = phone.to_e164(number_text, config.default_region)
        except phone.InvalidNumber as exc:
            raise BadData(f"not a phone number: {exc}") from None
        wanted = config.numbers.get(number)
        if wanted is None:
            raise UnknownNumber(f"{number} is not in any pool")
        problem = cnam.cnam_problem(name)
        if problem is not None:
            raise BadData(problem)
        now = self._clock.now()
        if on > now + 60:
            raise BadData("--on is in the future: record a provisioning once the carrier made it")
        previous = (await self._repo.latest_provisioned()).get(number)
        if previous is not None and not force:
            refused = cnam.change_refused(previous[1], on, name_changed=previous[0] != name)
            if refused:
                raise BadData(f"{refused}; record it anyway with --force")
        await self._repo.add_provisioned(number, name, on, now)
        return cnam.status(cnam.CnamState(number, wanted.name, name, on), now)

    async def status(self, config: Config) -> list[cnam.CnamStatus]:
        """Every configured number's state, in pool order."""
        provisioned = await self._repo.latest_provisioned()
        now = self._clock.now()
        out = []
        for number, cfg in config.numbers.items():
            name, on = provisioned.get(number, (None, None))
            out.append(cnam.status(cnam.CnamState(number, cfg.name, name, on), now))
        return out
