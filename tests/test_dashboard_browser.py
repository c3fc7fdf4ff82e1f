"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium over
chromedriver, against a running agent. Each page is screenshotted into the test's tmp folder
and copied to test-artifacts/screenshots/ (kept by CI).

Without Chromium the tests skip on a workstation and FAIL under CI=true (.ci/run installs
``chromium`` and ``chromium-driver``). Selenium calls block, so they run in a thread while
the agent serves on the test's event loop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.clock import FrozenClock
from tests.admin_rig import PATIENT, Rig, seed_outcomes, start_rig
from tests.conftest import PARIS, AgentFactory

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
OURS = {"+33142000001": "reminders", "+33142000002": "reminders", "+33472000003": "reminders"}
T = TypeVar("T")


def _need_chromium() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return
    message = f"{', '.join(missing)} missing: apt-get install chromium chromium-driver"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


async def run(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


class Browser:
    def __init__(self, driver: Any, base: str, shots: Path, test: str) -> None:
        self.driver = driver
        self.base = base
        self.shots = shots
        self.test = test

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def wait_for(self, element_id: str) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, 20).until(
            ec.presence_of_element_located((By.ID, element_id))
        )

    def sign_in(self, token: str, landing: str = "pools") -> None:
        from selenium.webdriver.common.by import By

        self.open("/")
        self.wait_for("token").send_keys(token)
        self.driver.find_element(By.ID, "signin-submit").click()
        self.wait_for(landing)

    def shot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{self.test}-{name}.png"
        assert self.driver.save_screenshot(str(path))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, ARTIFACTS / path.name)
        return path

    def texts(self, css: str) -> list[str]:
        from selenium.webdriver.common.by import By

        return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, css)]

    def count(self, css: str) -> int:
        from selenium.webdriver.common.by import By

        return len(self.driver.find_elements(By.CSS_SELECTOR, css))


def _driver(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1200,1400",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))


@pytest.fixture
async def browser(
    make_agent: AgentFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Rig, Browser]]:
    _need_chromium()
    rig = await start_rig(make_agent)
    driver = await run(_driver, tmp_path / "chromium-profile")
    try:
        yield rig, Browser(driver, rig.base, tmp_path / "screenshots", request.node.name)
    finally:
        await run(driver.quit)


async def _store_figures(rig: Rig, clock: FrozenClock) -> tuple[int, str]:
    """From the store itself: calls counted today in the pool, and today's answer rate."""
    assert rig.agent.db is not None
    today = datetime.fromtimestamp(clock.now(), PARIS).date()
    midnight = datetime.combine(today, time(0), PARIS).timestamp()
    used = await rig.agent.db.fetchone(
        "SELECT SUM(used) FROM daily_usage WHERE day = ?", (today.isoformat(),)
    )
    rate = await rig.agent.db.fetchone(
        "SELECT SUM(CASE WHEN outcome = 'answered' THEN 1 ELSE 0 END), COUNT(*) FROM call_audit"
        " WHERE at >= ? AND pool = 'reminders'"
        " AND outcome IN ('answered', 'busy', 'no_answer', 'congestion', 'unavailable', 'failed')",
        (midnight,),
    )
    assert used is not None and rate is not None
    return int(used[0] or 0), f"{rate[0] / rate[1]:.0%}"


async def test_sign_in_and_the_overview_matches_the_store(
    browser: tuple[Rig, Browser], clock: FrozenClock
) -> None:
    rig, b = browser
    assert rig.agent.outbound is not None
    await seed_outcomes(rig.agent, clock, OURS, 10)
    for i in range(5):
        await rig.agent.outbound.decide("reminder", PATIENT, f"live.{i}")
    await rig.agent.outbound.flush()
    await rig.agent.outbound.return_leases()  # the store counts handed-out calls only
    await run(b.open, "/")
    await run(b.wait_for, "token")
    await run(b.shot, "signin")
    await run(b.sign_in, rig.tokens["operator"])
    await run(b.shot, "overview")
    used, rate = await _store_figures(rig, clock)
    row = 'tr[data-pool="reminders"]'
    assert await run(b.texts, f"{row} .usable") == ["3 / 3"]
    assert await run(b.texts, f"{row} .used") == [f"{used} / 220"]
    assert used == 5
    assert await run(b.texts, f"{row} .rate-today") == [rate]
    assert await run(b.texts, "#me") == ["operator-user (operator)"]
    assert await run(b.texts, '#reserve tr[data-pool="reserve"] .left') == ["1"]


async def test_a_numbers_plot_has_one_point_per_day_with_data(
    browser: tuple[Rig, Browser], clock: FrozenClock
) -> None:
    rig, b = browser
    truth = await seed_outcomes(rig.agent, clock, OURS, 45)
    number = "+33142000001"
    today = datetime.fromtimestamp(clock.now(), PARIS).date()
    window = {(today - timedelta(days=i)).strftime("%m-%d") for i in range(30)}
    expected = sorted(
        datetime.fromisoformat(day).strftime("%m-%d")
        for (n, day) in truth
        if n == number and datetime.fromisoformat(day).strftime("%m-%d") in window
    )
    assert 10 < len(expected) < 30  # some days without calls: gaps, not zeros
    await run(b.sign_in, rig.tokens["viewer"])
    await run(b.open, "/pools/reminders")
    await run(b.wait_for, "numbers")
    await run(b.shot, "pool")
    await run(b.open, f"/numbers/{number}")
    await run(b.wait_for, "plot")
    await run(b.shot, "number")

    def buckets() -> list[str]:
        from selenium.webdriver.common.by import By

        points = b.driver.find_elements(By.CSS_SELECTOR, "#plot svg circle.pt")
        return sorted(p.get_attribute("data-bucket") for p in points)

    assert await run(buckets) == expected


async def test_an_operator_reinstates_a_quarantined_number_and_sees_it(
    browser: tuple[Rig, Browser],
) -> None:
    rig, b = browser
    number = "+33142000002"
    for source in ("ivr", "agent"):
        await rig.call(
            "POST", "/api/v1/reports", "operator", json={"number": number, "source": source}
        )
    await run(b.sign_in, rig.tokens["operator"])
    await run(b.open, f"/numbers/{number}")
    state = await run(b.wait_for, "state")
    assert state.text.startswith("quarantined until")
    await run(b.shot, "quarantined")

    def reinstate() -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        b.driver.find_element(By.ID, "reinstate").click()
        WebDriverWait(b.driver, 10).until(ec.alert_is_present()).accept()  # the confirm()
        WebDriverWait(b.driver, 20).until(lambda d: not d.find_elements(By.ID, "reinstate"))

    await run(reinstate)
    assert await run(b.texts, "#state") == ["active"]
    history = await run(b.texts, "#history tbody tr")
    assert history[0].endswith("reinstate operator-user")  # newest first: who changed what
    assert sum("spam_report" in h for h in history) == 2
    await run(b.shot, "reinstated")
    for page, element in (("/alerts", "alerts"), ("/screening", "verdicts")):
        await run(b.open, page)
        await run(b.wait_for, element)
        await run(b.shot, page.strip("/"))


async def test_a_viewer_sees_no_action_and_the_api_refuses_it(
    browser: tuple[Rig, Browser],
) -> None:
    rig, b = browser
    number = "+33142000002"
    for source in ("ivr", "agent"):
        await rig.call(
            "POST", "/api/v1/reports", "operator", json={"number": number, "source": source}
        )
    assert rig.agent.alerts is not None
    await rig.agent.alerts.raise_("pool_exhausted", "reminders", "no number left")
    await run(b.sign_in, rig.tokens["viewer"])
    for page, element in (
        (f"/numbers/{number}", "state"),
        ("/alerts", "alerts"),
        ("/screening", "verdicts"),
    ):
        await run(b.open, page)
        await run(b.wait_for, element)
        # The only form a viewer gets is "sign out".
        assert await run(b.count, "main form, main button") == 0, page
        await run(b.shot, "viewer-" + page.strip("/").split("/")[0])
    await run(b.open, "/alerts")
    await run(b.wait_for, "alerts")
    rows = await run(b.texts, "#alerts tbody tr")  # open alerts are listed, with no button
    assert any("no number left" in r for r in rows) and any("quarantined" in r for r in rows)
    status, body = await rig.call("POST", f"/api/v1/numbers/{number}/reinstate", "viewer")
    assert status == 403 and "viewer" in body["error"]
    await run(b.open, "/recordings")
    assert "403" in await run(lambda: b.driver.page_source)


async def test_an_auditor_lands_on_recordings_only(browser: tuple[Rig, Browser]) -> None:
    rig, b = browser
    await run(b.sign_in, rig.tokens["auditor"], "recordings")
    await run(b.shot, "recordings")
    assert await run(b.texts, "header nav a") == ["Recordings"]
    await run(b.open, "/pools/reminders")
    assert "403" in await run(lambda: b.driver.page_source)
