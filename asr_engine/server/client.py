"""Websocket clients for the native protocol: stream a file as a live source would, or the
microphone (through `sounddevice`)."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
from typing import AsyncIterator, Callable

import numpy as np

from asr_engine.audio import SAMPLE_RATE, load_audio

__all__ = ["MicrophoneError", "client_tls", "open_microphone", "stream_chunks", "stream_file", "stream_microphone"]


class MicrophoneError(RuntimeError):
    """No usable microphone: sounddevice or PortAudio missing, or no input device."""


async def stream_chunks(url: str, chunks: AsyncIterator[np.ndarray], sample_rate: int = SAMPLE_RATE,
                        start: dict | None = None, on_message: Callable[[dict], None] | None = None,
                        token: str | None = None, tls: ssl.SSLContext | None = None) -> list[dict]:
    """Open a session, send each int16 chunk as it comes, end it, and return every server message
    (partials, finals, errors) in order once the server has closed after its last final. `tls`: the
    context for a wss:// URL (default: the system's certificates)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    headers = {"Authorization": f"Bearer {token}"} if token else None
    messages: list[dict] = []

    def got(m: dict) -> None:
        messages.append(m)
        if on_message:
            on_message(m)

    async with connect(url, additional_headers=headers, max_size=1 << 22, **({"ssl": tls} if tls else {})) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": sample_rate, "encoding": "int16", **(start or {})}))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"server refused the session: {ready}")

        async def receive() -> None:
            async for raw in ws:
                got(json.loads(raw))

        async def send() -> None:
            try:
                async for x in chunks:
                    await ws.send(np.asarray(x, dtype="<i2").tobytes())
                await ws.send(json.dumps({"type": "end"}))
            except ConnectionClosed:  # the server ended the session (an error, a limit): keep what it sent
                pass

        reader, sender = asyncio.create_task(receive()), asyncio.create_task(send())
        try:
            # a server that ends the session (an error, a limit) while the source waits for its next
            # chunk (real-time pacing, a quiet microphone) ends the sending too, not only the next send
            await asyncio.wait([reader, sender], return_when=asyncio.FIRST_COMPLETED)
            if not sender.done():
                sender.cancel()
            await asyncio.wait([sender])  # its end, whichever it was, without raising it here
            if not sender.cancelled() and sender.exception() is not None:  # the source failed
                reader.cancel()
                raise sender.exception()
        finally:
            if hasattr(chunks, "aclose"):  # a source that holds a device lets it go now
                await chunks.aclose()
        await reader  # the server closes after the last final
    return messages


def client_tls(url: str, ca_file: str | None) -> ssl.SSLContext | None:
    """A client's TLS context trusting `ca_file` (a server's self-signed certificate, or the CA that signed it);
    None without one (websockets' default: the system's certificates). ValueError for a file that is no PEM
    certificate, or a URL that is not wss://."""
    if ca_file is None:
        return None
    if not url.startswith("wss://"):
        raise ValueError(f"--ca-file goes with a wss:// URL, not {url}")
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"--ca-file {ca_file}: not a readable PEM certificate file ({e})") from None


async def stream_file(url: str, path: str, realtime: bool = False, chunk_ms: float = 100.0,
                      start: dict | None = None, on_message: Callable[[dict], None] | None = None,
                      token: str | None = None, tls: ssl.SSLContext | None = None) -> list[dict]:
    """Send `path` (resampled to 16 kHz int16) in chunk_ms pieces, paced in real time or as fast as
    possible; returns every server message in order."""
    audio = (np.clip(load_audio(path), -1, 1) * 32767).astype("<i2")
    step = max(1, int(SAMPLE_RATE * chunk_ms / 1000))

    async def chunks() -> AsyncIterator[np.ndarray]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(0, len(audio), step):
            yield audio[i: i + step]
            if realtime:  # until the audio sent so far would have been spoken (the last chunk may be short)
                await asyncio.sleep(max(0.0, t0 + min(i + step, len(audio)) / SAMPLE_RATE - loop.time()))

    return await stream_chunks(url, chunks(), SAMPLE_RATE, start, on_message, token, tls)


def open_microphone(device: int | str | None = None):
    """(sounddevice module, device info, sample rate) for an input device, or a MicrophoneError
    that says what is missing."""
    from asr_engine.server.protocol import SAMPLE_RATES

    try:
        import sounddevice as sd
    except ImportError:
        raise MicrophoneError("the microphone needs sounddevice: pip install 'asr-engine[mic]'") from None
    except OSError as e:  # sounddevice is there, the PortAudio library is not
        raise MicrophoneError(f"sounddevice cannot load PortAudio ({e}); on Debian/Ubuntu: "
                              "apt-get install libportaudio2") from None
    try:
        info = sd.query_devices(device, kind="input")
    except (sd.PortAudioError, ValueError) as e:
        which = "the default input device" if device is None else f"input device {device!r}"
        raise MicrophoneError(f"no microphone: {which} is not available ({e}); list the devices with "
                              "`python -m sounddevice`") from None
    for rate in (SAMPLE_RATE, int(info["default_samplerate"])):
        try:
            sd.check_input_settings(device, channels=1, dtype="int16", samplerate=rate)
        except (sd.PortAudioError, ValueError):
            continue
        if rate in SAMPLE_RATES:
            return sd, info, rate
    raise MicrophoneError(f"{info['name']}: records neither 16 kHz nor another rate the server takes "
                          f"{SAMPLE_RATES}, as 16-bit mono")


async def stream_microphone(url: str, device: int | str | None = None, seconds: float | None = None,
                            chunk_ms: float = 100.0, start: dict | None = None,
                            on_message: Callable[[dict], None] | None = None, token: str | None = None,
                            tls: ssl.SSLContext | None = None) -> list[dict]:
    """Stream the microphone until `seconds` of audio have been captured or Ctrl-C (SIGINT), then end
    the session properly and return every server message (the last final included)."""
    sd, _, rate = open_microphone(device)
    limit = int(seconds * rate) if seconds else None
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def captured(indata, frames, time, status) -> None:  # PortAudio's thread
        loop.call_soon_threadsafe(queue.put_nowait, indata[:, 0].copy())

    async def chunks() -> AsyncIterator[np.ndarray]:
        sent = 0
        with sd.InputStream(device=device, samplerate=rate, channels=1, dtype="int16",
                            blocksize=max(1, int(rate * chunk_ms / 1000)), callback=captured):
            while limit is None or sent < limit:
                x = await queue.get()
                if x is None:  # Ctrl-C
                    return
                x = x if limit is None else x[: limit - sent]
                sent += len(x)
                yield x

    try:
        loop.add_signal_handler(signal.SIGINT, queue.put_nowait, None)
        handler = True
    except (RuntimeError, ValueError):  # not the main thread: Ctrl-C stays Python's
        handler = False
    try:
        return await stream_chunks(url, chunks(), rate, start, on_message, token, tls)
    finally:
        if handler:
            loop.remove_signal_handler(signal.SIGINT)
