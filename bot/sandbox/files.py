"""Slack's file upload flow: `files.getUploadURLExternal` (a file id and a URL to send the
bytes to), the upload itself (POST the raw bytes to that URL), and
`files.completeUploadExternal` (share the uploaded files in a channel or thread, as a message
with `files`). Kept in memory; `GET /files/{id}` serves a file's bytes to the sandbox page."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.sandbox.webapi import Body, Method, WebApi, error, registrar

METHODS: dict[str, Method] = {}
method = registrar(METHODS)
MAX_LENGTH = 1024**3  # Slack's limit: 1 GB


@dataclass
class StoredFile:
    id: str
    name: str
    length: int  # as declared to files.getUploadURLExternal
    data: bytes | None = None
    title: str | None = None
    shared: bool = False

    def public(self, base_url: str) -> Body:
        return {
            "id": self.id,
            "name": self.name,
            "title": self.title or self.name,
            "mimetype": "image/png"
            if self.name.lower().endswith(".png")
            else "application/octet-stream",
            "size": len(self.data or b""),
            "url_private": f"{base_url}/files/{self.id}",
        }


def files_of(api: WebApi) -> dict[str, StoredFile]:
    return api.store.files


@method("files.getUploadURLExternal")
async def get_upload_url(api: WebApi, args: Body) -> Body:
    name = str(args.get("filename") or "")
    raw = args.get("length")
    try:
        length = int(raw) if isinstance(raw, int | str) else 0
    except ValueError:
        return error("invalid_arguments")
    if not name or length <= 0 or length > MAX_LENGTH:
        return error("invalid_arguments")
    fid = api.store.next_id("F")
    files_of(api)[fid] = StoredFile(fid, name, length)
    return {"ok": True, "upload_url": f"{api.base_url()}/upload/{fid}", "file_id": fid}


@method("files.completeUploadExternal")
async def complete_upload(api: WebApi, args: Body) -> Body:
    items = args.get("files")
    if isinstance(items, str):
        try:
            items = json.loads(items)
        except ValueError:
            items = None
    if not isinstance(items, list) or not items:
        return error("invalid_arguments")
    stored = files_of(api)
    done: list[StoredFile] = []
    for item in items:
        f = stored.get(str((item or {}).get("id")))
        if f is None or f.data is None:
            return error("file_not_found")
        f.title = (item or {}).get("title") or f.name
        done.append(f)
    base = api.base_url()
    channel = args.get("channel_id")
    if channel:
        info, err = api.channel_for_write(channel)
        if err:
            return err
        assert info is not None
        ts = api.store.next_ts()
        message = api.bot_message({"text": args.get("initial_comment") or ""}, ts)
        message["files"] = [f.public(base) for f in done]
        message["upload"] = True
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
        api.store.add_message(info["id"], message)
    for f in done:
        f.shared = bool(channel)
    return {"ok": True, "files": [f.public(base) for f in done]}


def add_routes(app: web.Application, api: WebApi) -> None:
    """The upload URL (raw bytes in the body, as Slack takes them) and a file's bytes."""

    async def upload(request: web.Request) -> web.Response:
        f = files_of(api).get(request.match_info["file_id"])
        if f is None or f.data is not None:
            return web.Response(status=404, text="file not found")
        data = await request.read()
        if len(data) != f.length:
            return web.Response(status=400, text=f"expected {f.length} bytes, got {len(data)}")
        f.data = data
        return web.Response(text=f"OK - {len(data)}")

    async def serve(request: web.Request) -> web.Response:
        f = files_of(api).get(request.match_info["file_id"])
        if f is None or f.data is None:
            return web.Response(status=404, text="file not found")
        kind: Any = f.public("")["mimetype"]
        return web.Response(body=f.data, content_type=kind)

    app.router.add_post("/upload/{file_id}", upload)
    app.router.add_get("/files/{file_id}", serve)
