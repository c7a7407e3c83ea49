"""The demo's page in headless Chromium (Debian's package, driven by Playwright): a person hands
a customer off to finance and a finance user accepts it; a finance lead approves a discount.

Needs /usr/bin/chromium (`apt-get install chromium`; scripts/test installs it when it can).
Without it these tests skip, except under CI=true, where they fail. Set DEMO_SCREENSHOT=path
to also save the page, with alerts and the accepted handoff's thread, as a PNG (docs/demo.png).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.demo import Demo, DemoOptions
from bot.service import Tuning
from tests.fixtures.bot import ALICE, FINANCE, FRANK, GRACE, SALES
from tests.fixtures.services import IN_CI

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADA = "ada.lovelace@analytical-engines.example"
WAIT_MS = 10_000


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    tuning = Tuning(per_channel_interval=0, outbox_poll=0.1)
    d = Demo(DemoOptions(port=0, data=tmp_path, events=False, tuning=tuning))
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


@pytest.fixture
async def page(demo: Demo):
    if not HAVE_CHROMIUM:
        reason = "Chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
        if IN_CI:
            pytest.fail(reason + " (CI=true: browser tests must run)")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = await browser.new_page(viewport={"width": 1280, "height": 760})
            tab.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            await tab.goto(demo.url + "#" + SALES)
            await tab.wait_for_selector("body[data-ready='1']")
            yield tab
            assert errors == [], errors  # no script errors while the person clicked around
        finally:
            await browser.close()


async def act_as(tab, user: str) -> None:
    await tab.select_option("#user-switcher", user)
    await tab.wait_for_selector(f"body[data-user='{user}']")


async def open_channel(tab, channel: str) -> None:
    await tab.click(f"#sidebar [data-channel='{channel}']")
    await tab.wait_for_selector(f"#sidebar .item.active[data-channel='{channel}']")


async def type_command(tab, text: str) -> None:
    await tab.fill("#composer-input", text)
    await tab.press("#composer-input", "Enter")


async def test_hand_a_customer_to_finance_and_accept_it(demo: Demo, page):
    await demo.play(6)  # a few alerts around, as in a real day
    await act_as(page, ALICE)
    await open_channel(page, SALES)
    await type_command(page, "/crm find Ada Lovelace")
    found = page.locator(".msg.ephemeral", has_text="Only visible to you").filter(
        has=page.locator("button[data-action-id='customer_open']")
    )
    await found.locator("button[data-action-id='customer_open']").first.click()
    card_button = page.locator(".msg.ephemeral button[data-action-id='customer_handoff']")
    await card_button.first.click()

    modal = page.locator(".modal[data-callback-id]")
    await modal.wait_for()
    await modal.locator("[data-block-id='department'] select").select_option("finance")
    await modal.locator("[data-block-id='note'] textarea, [data-block-id='note'] input").fill(
        "Wants to move to annual invoicing; please set it up."
    )
    await modal.locator("button[type=submit]").click()
    await modal.wait_for(state="detached")

    await act_as(page, FRANK)
    await open_channel(page, FINANCE)
    handoff = page.locator(".msg").filter(has=page.locator("[data-action-id='handoff_accept']"))
    await handoff.locator("button", has_text="Accept").click()
    accepted = page.locator(".msg").filter(has=page.locator("[data-action-id='handoff_complete']"))
    await accepted.wait_for()
    assert await handoff.count() == 0  # the message was updated in place: no Accept any more
    await accepted.locator(".thread-link").click()
    thread = page.locator("#thread-messages")
    await thread.locator(".msg", has_text="@frank").first.wait_for()
    assert "Ada Lovelace" in await thread.locator(".msg").first.inner_text()

    if os.environ.get("DEMO_SCREENSHOT"):
        await take_screenshot(demo, page, Path(os.environ["DEMO_SCREENSHOT"]))


async def take_screenshot(demo: Demo, tab, path: Path) -> None:
    """The page for the README: alerts in #finance, one shown in the channel, the handoff."""
    await demo.play(3)
    overdue = {
        "spec": "crm.sync/1",
        "id": "demo-screenshot-overdue",
        "type": "invoice.overdue",
        "occurred_at": datetime.now(UTC).isoformat(),
        "source": "billing",
        "customer": {"external_id": "CUS-1001"},
        "data": {"invoice_id": "INV-20417", "amount": 12500, "currency": "EUR", "days_overdue": 30},
    }
    await demo.send(overdue)
    await tab.locator("#messages .msg", has_text="INV-20417").wait_for()
    await tab.evaluate("document.querySelector('#toasts').replaceChildren()")
    await tab.set_viewport_size({"width": 1280, "height": 860})
    await tab.mouse.move(1, 300)  # no hover highlight in the picture
    await tab.locator("#messages .msg", has_text="INV-20417").scroll_into_view_if_needed()
    path.parent.mkdir(parents=True, exist_ok=True)
    await tab.screenshot(path=str(path))


async def test_a_finance_lead_approves_a_discount(demo: Demo, page):
    await act_as(page, ALICE)
    await open_channel(page, SALES)
    await type_command(page, f"/crm approval {ADA} discount 15% multi-year commitment")
    await page.locator(".msg.ephemeral", has_text="Only visible to you").first.wait_for()

    await act_as(page, GRACE)
    await open_channel(page, FINANCE)
    request = page.locator(".msg").filter(has=page.locator("[data-action-id='approval_approve']"))
    await request.wait_for()
    text = await request.inner_text()
    assert "15" in text and "Ada Lovelace" in text
    await request.locator("[data-action-id='approval_approve']").click()
    await request.wait_for(state="detached")  # the buttons are gone: it was decided
    decided = page.locator(".msg", has_text="Ada Lovelace").filter(has_text="pproved")
    await decided.first.wait_for()
    assert "@grace" in await decided.first.inner_text()


MRKDWN = [
    ("*bold* and _italic_ and ~gone~", "<b>bold</b> and <i>italic</i> and <s>gone</s>"),
    ("`a <b>`", "<code>a &lt;b&gt;</code>"),
    ("snake_case_name stays", "snake_case_name stays"),
    ("<@U0GRACE01> and <@U0FRANK01|Frank>", "@grace</span> and <span"),
    ("<#C0FINANCE>", ">#finance</a>"),
    ("<https://example.com/a?b=1&amp;c=2|the docs>", 'href="https://example.com/a?b=1&amp;c=2"'),
    ("<mailto:ada@x.example|ada@x.example>", 'href="mailto:ada@x.example"'),
    ("<javascript:alert(1)|click>", 'href="#"'),
    ("&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ("<!date^43200^{date_num}|fallback>", "1970-01-01"),  # noon UTC: that day anywhere
    ("<!date^nope|the fallback>", "the fallback"),
    (":white_check_mark: done", "✅ done"),
    ("> quoted", "<blockquote>quoted</blockquote>"),
]


async def test_mrkdwn_renders_like_slack_and_never_as_markup(page):
    for text, expected in MRKDWN:
        html = await page.evaluate("(t) => mrkdwn(t)", text)
        assert expected in html, (text, html)
        assert "<script" not in html
