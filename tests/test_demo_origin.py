"""The demo page answers only its own page: another site's POST, a rebinding `Host` and a
body that is not JSON are refused and reach no bot (bot/sandbox/page.py `same_site_only`)."""

from __future__ import annotations

import aiohttp
import pytest

from tests.fixtures.bot import ALICE, SALES
from tests.test_demo import demo, start_demo  # noqa: F401 (the fixture)

HELP = {"user": ALICE, "channel": SALES, "text": "/crm help"}


async def test_cross_origin_and_rebinding_requests_are_refused(demo):  # noqa: F811
    store = demo.sandbox.store
    port = demo.url.rstrip("/").rsplit(":", 1)[1]
    async with aiohttp.ClientSession() as http:

        async def post(headers: dict, **body) -> int:
            async with http.post(demo.url + "ui/message", headers=headers, **body) as r:
                return r.status

        # another site's page, in the victim's browser: Origin says where it runs
        assert await post({"Origin": "https://evil.example"}, json=HELP) == 403
        assert await post({"Origin": "null"}, json=HELP) == 403
        # a form or text/plain "simple" request (no preflight): not JSON
        form = {"data": "user=U0ALICE01&channel=C0SALES01&text=/crm+help"}
        assert await post({"Content-Type": "application/x-www-form-urlencoded"}, **form) == 415
        assert await post({"Content-Type": "text/plain"}, data='{"user": "x"}') == 415
        # DNS rebinding: the attacker's name resolves to 127.0.0.1, Host stays theirs
        rebound = {"Host": f"evil.example:{port}"}
        assert await post(rebound, json=HELP) == 403
        async with http.get(demo.url + "ui/state", params={"user": ALICE}, headers=rebound) as r:
            assert r.status == 403
        assert store.ephemerals(ALICE) == []

        # its own page: same origin, JSON, its own Host (127.0.0.1 or localhost)
        own = {"Origin": demo.url.rstrip("/")}
        assert await post(own, json=HELP) == 200
        local = {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}
        assert await post(local, json=HELP) == 200
        async with http.get(demo.url + "ui/state", params={"user": ALICE}) as r:
            assert r.status == 200
    assert len(store.ephemerals(ALICE)) == 2


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_the_page_itself_loads_at_its_own_address(demo, host):  # noqa: F811
    port = demo.url.rstrip("/").rsplit(":", 1)[1]
    url, headers = f"http://127.0.0.1:{port}/", {"Host": f"{host}:{port}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        assert r.status == 200 and "<html" in (await r.text()).lower()
