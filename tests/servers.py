"""Test helper: a server on its own event-loop thread, as `asr-engine serve` runs it."""

import asyncio
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
