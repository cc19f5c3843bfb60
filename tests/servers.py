"""Test helper: a server on its own event-loop thread, as `asr-engine serve` runs it."""

import asyncio
import json
import threading

from asr_engine.server.app import Server, ServerConfig


class Running:
    """A server on its own event loop thread, as `asr-engine serve` runs it."""

    def __init__(self, engine, **cfg):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self.call(Server(engine, ServerConfig(port=0, **cfg)).start())
        self.url = f"ws://127.0.0.1:{self.server.port}"

    def call(self, coro, timeout=60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        self.call(self.server.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def vosk_text(url: str, path: str) -> str:
    """The final text a Vosk client gets for a file sent in one message (config, the audio, eof)."""
    from websockets.asyncio.client import connect

    from asr_engine.audio import load_audio

    async with connect(url + "/vosk") as ws:
        await ws.send('{"config": {"sample_rate": 16000}}')
        await ws.send((load_audio(path) * 32767).astype("<i2").tobytes())
        await ws.recv()
        await ws.send('{"eof": 1}')
        return json.loads(await ws.recv())["text"]
