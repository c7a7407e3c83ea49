"""The sandbox's file upload flow, driven by slack_sdk's own `files_upload_v2`
(files.getUploadURLExternal, the upload, files.completeUploadExternal)."""

from __future__ import annotations

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError

from bot.lib.slack_out import make_client
from bot.sandbox import Sandbox

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
async def files_sandbox():
    sandbox = await Sandbox.start()
    yield sandbox
    await sandbox.stop()


async def test_a_file_is_uploaded_shared_in_a_thread_and_served(files_sandbox):
    sandbox = files_sandbox
    client = make_client(sandbox.bot_token, sandbox.api_url)
    posted = await client.chat_postMessage(channel="C0FINANCE", text="Digest")
    answer = await client.files_upload_v2(
        content=PNG,
        filename="chart.png",
        title="Pipeline",
        channel="C0FINANCE",
        thread_ts=posted["ts"],
    )
    (f,) = answer["files"]
    assert (f["size"], f["mimetype"], f["title"]) == (len(PNG), "image/png", "Pipeline")
    (reply,) = [m for m in sandbox.store.thread("C0FINANCE", posted["ts"]) if m.get("files")]
    assert reply["files"][0]["id"] == f["id"]
    async with aiohttp.ClientSession() as http, http.get(f"{sandbox.url}/files/{f['id']}") as r:
        assert r.status == 200 and await r.read() == PNG


async def test_wrong_sizes_and_unknown_files_are_refused(files_sandbox):
    sandbox = files_sandbox
    client = make_client(sandbox.bot_token, sandbox.api_url)
    got = await client.files_getUploadURLExternal(filename="a.png", length=10)
    async with (
        aiohttp.ClientSession() as http,
        http.post(got["upload_url"], data=b"short") as r,
    ):
        assert r.status == 400
    with pytest.raises(SlackApiError, match="file_not_found"):
        await client.files_completeUploadExternal(
            files=[{"id": got["file_id"]}], channel_id="C0FINANCE"
        )
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        await client.files_getUploadURLExternal(filename="a.png", length=0)
