"""A websocket client for the native protocol: stream a file as a live source would."""

from __future__ import annotations

import asyncio
import json
from typing import Callable

import numpy as np

from asr_engine.audio import SAMPLE_RATE, load_audio

__all__ = ["stream_file"]


async def stream_file(url: str, path: str, realtime: bool = False, chunk_ms: float = 100.0,
                      start: dict | None = None, on_message: Callable[[dict], None] | None = None,
                      token: str | None = None) -> list[dict]:
    """Send `path` (resampled to 16 kHz int16) in chunk_ms pieces, paced in real time or as fast as
    possible; returns every server message (partials, finals, errors) in order."""
    from websockets.asyncio.client import connect

    audio = (np.clip(load_audio(path), -1, 1) * 32767).astype("<i2")
    step = max(1, int(SAMPLE_RATE * chunk_ms / 1000))
    headers = {"Authorization": f"Bearer {token}"} if token else None
    messages: list[dict] = []

    def got(m: dict) -> None:
        messages.append(m)
        if on_message:
            on_message(m)

    async with connect(url, additional_headers=headers, max_size=1 << 22) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": SAMPLE_RATE, "encoding": "int16", **(start or {})}))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"server refused the session: {ready}")

        async def receive() -> None:
            async for raw in ws:
                got(json.loads(raw))

        reader = asyncio.create_task(receive())
        t0 = asyncio.get_running_loop().time()
        for i in range(0, len(audio), step):
            await ws.send(audio[i: i + step].tobytes())
            if realtime:
                await asyncio.sleep(max(0.0, t0 + (i + step) / SAMPLE_RATE - asyncio.get_running_loop().time()))
        await ws.send(json.dumps({"type": "end"}))
        await reader  # the server closes after the last final
    return messages
