"""The native websocket protocol (version 1) and the Vosk-compatible one: parsing and
validating client messages, and shaping server messages.

Native, client to server:
    {"type": "start", "version": 1, "sample_rate": 16000, "encoding": "int16" | "float32",
     "partials": true, "nbest": 1, "hotwords": [], "hotword_boost": 1.5,
     "endpoint": false | true | {"silence_no_text": 2.4, "silence_after_text": 1.2, "max_utterance": 20},
     "auto_gain": true | false (default: the server's; false: quiet audio is decoded as it comes),
     "punctuate": true | false (default: the server's: finals written with punctuation, casing and numbers in digits
                               when it writes them; false: the recognizer's lower-case words)}
    binary messages: audio, mono, little-endian, in the start message's encoding
    {"type": "end"}
Server to client: ready, partial, final, error (see the README's "Server" section).

Vosk, client to server: optional {"config": {"sample_rate": N, "words": bool,
"max_alternatives": K, "phrase_list": [...]}}, binary int16 PCM, {"eof": 1}.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from asr_engine.audio import AudioError, to_float32
from asr_engine.endpoint import EndpointConfig
from asr_engine.results import Result

__all__ = ["PROTOCOL_VERSION", "ProtocolError", "Start", "VoskConfig", "decode_audio", "final_message",
           "parse_json", "parse_start", "parse_vosk_config", "vosk_result"]

PROTOCOL_VERSION = 1
SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)


class ProtocolError(ValueError):
    """A message the server refuses: `code` is machine-readable, the text is for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Start:
    sample_rate: int = 16000
    encoding: str = "int16"
    partials: bool = True
    nbest: int = 1
    hotwords: tuple[str, ...] = ()
    hotword_boost: float = 1.5
    endpoint: EndpointConfig | None = None
    auto_gain: bool | None = None  # None: the server's (asr_engine.level)
    punctuate: bool | None = None  # None: the server's (its --punctuate model and --numbers); False: not written


@dataclass(frozen=True)
class VoskConfig:
    sample_rate: int = 16000
    words: bool = False
    max_alternatives: int = 0
    phrase_list: tuple[str, ...] = field(default_factory=tuple)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]}... is out of range")
    return value


def parse_json(text: str) -> dict:
    """A client's text message: a JSON object with finite numbers (no NaN, Infinity or 1e400),
    integers of at most 4300 digits (Python's limit) and nesting Python can parse."""
    try:
        msg = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as e:
        raise ProtocolError("bad_json", f"not valid JSON: {e}") from None
    except (ValueError, RecursionError) as e:  # huge numbers, NaN/Infinity, deep nesting
        raise ProtocolError("bad_json", f"not acceptable JSON: {str(e)[:200]}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_message", "a text message must be a JSON object")
    return msg


def _typed(msg: dict, key: str, kinds: tuple[type, ...], default):
    if key not in msg:
        return default
    value = msg[key]
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise ProtocolError("bad_field", f"{key!r} must be {' or '.join(k.__name__ for k in kinds)}, "
                                         f"got {type(value).__name__}")
    return value


def _sample_rate(value) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # Vosk clients send 16000.0
    if isinstance(value, bool) or value not in SAMPLE_RATES:
        raise ProtocolError("bad_sample_rate", f"unsupported sample rate {value!r}: use one of {SAMPLE_RATES}")
    return int(value)


MAX_PHRASES = 1000
MAX_PHRASE_CHARS = 100  # a name or a term, not a text: 1,000 phrases of 1,000 characters took 1.1 s to compile


def _phrases(value, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ProtocolError("bad_field", f"{key!r} must be a list of strings")
    if len(value) > MAX_PHRASES:
        raise ProtocolError("bad_field", f"{key!r}: at most {MAX_PHRASES} phrases")
    if any(len(p) > MAX_PHRASE_CHARS for p in value):
        raise ProtocolError("bad_field", f"{key!r}: a phrase is at most {MAX_PHRASE_CHARS} characters")
    return tuple(p for p in value if p.strip())


def parse_start(msg: dict, max_nbest: int) -> Start:
    known = {"type", "version", "sample_rate", "encoding", "partials", "nbest", "hotwords", "hotword_boost",
             "endpoint", "auto_gain", "punctuate"}
    unknown = sorted(set(msg) - known)
    if unknown:
        raise ProtocolError("unknown_field", f"unknown fields in start: {unknown}")
    version = _typed(msg, "version", (int,), PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError("bad_version", f"protocol version {version} is not supported (this server speaks "
                                           f"{PROTOCOL_VERSION})")
    encoding = _typed(msg, "encoding", (str,), "int16")
    if encoding not in ("int16", "float32"):
        raise ProtocolError("bad_field", f"encoding must be 'int16' or 'float32', got {encoding!r}")
    nbest = _typed(msg, "nbest", (int,), 1)
    if not 1 <= nbest <= max_nbest:
        raise ProtocolError("bad_field", f"nbest must be within 1..{max_nbest} on this server")
    boost = float(_typed(msg, "hotword_boost", (int, float), 1.5))
    if not 0.0 <= boost <= 10.0:
        raise ProtocolError("bad_field", "hotword_boost must be within 0..10")
    endpoint = _typed(msg, "endpoint", (bool, dict), False)
    if isinstance(endpoint, dict):
        try:
            endpoint = EndpointConfig(**{k: float(_typed(endpoint, k, (int, float), 0)) for k in endpoint})
        except (TypeError, ValueError, OverflowError) as e:
            raise ProtocolError("bad_field", f"endpoint: {e}") from None
    else:
        endpoint = EndpointConfig() if endpoint else None
    return Start(_sample_rate(_typed(msg, "sample_rate", (int,), 16000)), encoding,
                 _typed(msg, "partials", (bool,), True), nbest,
                 _phrases(msg.get("hotwords", []), "hotwords"), boost, endpoint,
                 _typed(msg, "auto_gain", (bool,), None), _typed(msg, "punctuate", (bool,), None))


def parse_vosk_config(msg: dict) -> VoskConfig:
    cfg = msg["config"]
    if not isinstance(cfg, dict):
        raise ProtocolError("bad_field", "'config' must be an object")
    return VoskConfig(_sample_rate(_typed(cfg, "sample_rate", (int, float), 16000)),
                      bool(_typed(cfg, "words", (bool, int), False)),
                      int(_typed(cfg, "max_alternatives", (int,), 0)),
                      _phrases(cfg.get("phrase_list", []), "phrase_list"))


def decode_audio(data: bytes, encoding: str) -> np.ndarray:
    """A binary message -> samples (int16 or float32, 1-D)."""
    width = 2 if encoding == "int16" else 4
    if len(data) % width:
        raise ProtocolError("bad_audio", f"{len(data)} bytes is not a whole number of {encoding} samples")
    x = np.frombuffer(data, dtype="<i2" if width == 2 else "<f4")
    if width == 4:
        try:  # the engine's own rule for float audio (finite, on float's scale), said before the audio is queued
            to_float32(x)
        except AudioError as e:
            raise ProtocolError("bad_audio", str(e)) from None
    return x


def final_message(r: Result, nbest: int) -> dict:
    return {"type": "final", "text": r.text, "words": [w.to_dict() for w in r.words], "nbest": r.nbest[:nbest],
            "start": round(r.start, 3), "end": round(r.start + r.duration, 3),
            "skipped_fraction": round(1.0 - r.top_frames / r.frames, 4) if r.frames else 0.0}


def vosk_result(r: Result, cfg: VoskConfig) -> dict:
    """Vosk's result shape: {"text"} plus "result" word list with `words`, or "alternatives"."""
    if cfg.max_alternatives > 0:
        return {"alternatives": [{"text": t, "confidence": 0.0} for t in r.nbest[:cfg.max_alternatives]]
                or [{"text": "", "confidence": 0.0}]}
    out: dict = {}
    if cfg.words:
        out["result"] = [{"conf": round(w.confidence, 6), "end": round(w.end, 3), "start": round(w.start, 3),
                          "word": w.word} for w in r.words]
    out["text"] = r.text
    return out
