"""Fuzzing the server's protocols: hypothesis over the message parsers (10,000 messages), and a
seeded stream of hostile messages over real websockets beside a good client."""

import asyncio
import json
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asr_engine.server.protocol import ProtocolError, parse_json, parse_start, parse_vosk_config

BOUNDARY = [0, -1, 1, 2**31, -(2**63), 10**30, 8000, 16000, 16000.9, 16000.0, 1e-300, 1e300, -0.0, 3.5, True, False,
            None, "", "16000", "\u202e\u0000", "int16", "float32", [], {}]
scalars = st.one_of(st.sampled_from(BOUNDARY), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=20), st.booleans(), st.none())
values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(st.text(max_size=12), kids, max_size=4)),
                      max_leaves=12)
START_KEYS = ["type", "version", "sample_rate", "encoding", "partials", "nbest", "hotwords", "hotword_boost",
              "endpoint", "silence_no_text", "max_utterance", "x"]
VOSK_KEYS = ["sample_rate", "words", "max_alternatives", "phrase_list", "x"]
# raw text beside valid JSON: the literals JSON forbids, numbers beyond float and int limits, deep nesting
raw = st.one_of(st.text(max_size=60), st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "1e400", "9" * 5000, "[" * 50_000, '{"a":' * 5000, "\ud800", "{}", "[]"]))


def _native(msg: dict):
    m = parse_json(json.dumps(msg))
    if m.get("type") == "start":
        return parse_start(m, max_nbest=4)
    return m


@settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.fixed_dictionaries({"type": st.just("start")},
                                       optional={k: values for k in START_KEYS if k != "type"}),
                 st.fixed_dictionaries({"type": st.just("start"), "endpoint": st.dictionaries(
                     st.sampled_from(["silence_no_text", "silence_after_text", "max_utterance", "x"]), values)}),
                 values.map(lambda v: {"type": "start", "sample_rate": v}), raw))
def test_native_messages_are_accepted_or_refused_with_a_code(msg):
    try:
        _native(msg) if isinstance(msg, dict) else parse_json(msg)
    except ProtocolError as e:
        assert e.code and str(e)


@settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.fixed_dictionaries({}, optional={k: values for k in VOSK_KEYS}), values))
def test_vosk_configs_are_accepted_or_refused_with_a_code(cfg):
    try:
        cfg_ = parse_vosk_config(parse_json(json.dumps({"config": cfg})))
        assert cfg_.sample_rate in (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
        assert isinstance(cfg_.sample_rate, int)
    except ProtocolError as e:
        assert e.code and str(e)


def hostile(rng: random.Random, n: int, vosk: bool) -> list:
    """n seeded messages: malformed JSON, boundary values in every field, odd binary frames."""
    out = []
    for _ in range(n):
        k = rng.random()
        if k < 0.15:
            out.append(rng.choice(["{", "[]", "null", "NaN", "1e400", "[" * rng.randint(1, 3000), "\x00", "{}"]))
        elif k < 0.6:
            keys = (VOSK_KEYS if vosk else START_KEYS[1:9])[:-1 if vosk else None]  # the real fields
            body = {key: rng.choice(BOUNDARY + [float("1e308"), "x" * rng.randint(0, 500)])
                    for key in rng.sample(keys, rng.randint(1, 3))}
            if rng.random() < 0.1:
                body["x"] = 1  # an unknown field
            msg = {"config": body} if vosk else {**body, "type": rng.choice(["start", "start", "pause", 7])}
            out.append(json.dumps(msg))
        else:
            size = rng.choice([0, 1, 3, 2, 640, 3200, 8001])
            out.append(bytes(rng.getrandbits(8) for _ in range(size)) if size < 700 else
                       np.random.default_rng(rng.getrandbits(32)).integers(-3000, 3000, size // 2, "<i2").tobytes())
    if vosk:
        out.append('{"eof": 1}')
    else:
        out.append('{"type": "end"}')
    return out


def test_hostile_streams_get_answers_and_a_good_client_is_unharmed(caplog):
    pytest.importorskip("websockets")
    from websockets.asyncio.client import connect

    from asr_engine.backend import load_model
    from asr_engine.engine import DecodeOptions, Engine
    from asr_engine.server.client import stream_file
    from servers import Running

    sample = "asr_engine/samples/sample1.wav"
    engine = Engine(load_model(None, "auto"), DecodeOptions())
    alone = engine.transcribe_files([sample])[0].text
    srv = Running(engine, idle_timeout=20.0)
    rng = random.Random(7)

    async def attacker(path: str, messages: list) -> tuple[int, set]:
        answers, codes = 0, set()
        async with connect(srv.url + path, max_size=None) as ws:
            async def read():
                nonlocal answers
                async for m in ws:
                    answers += 1
                    msg = json.loads(m)
                    codes.add(msg.get("code"))

            reader = asyncio.create_task(read())
            for m in messages:
                await ws.send(m)
            await asyncio.wait_for(reader, 60)  # the server closes after the end/eof answer
        return answers, codes

    async def go():
        good = stream_file(srv.url + "/", sample, chunk_ms=80)
        return await asyncio.gather(attacker("/", hostile(rng, 1000, False)),
                                    attacker("/vosk", hostile(rng, 1000, True)), good)

    try:
        (n_native, native_codes), (n_vosk, vosk_codes), msgs = asyncio.run(asyncio.wait_for(go(), 180))
    finally:
        srv.stop()
    assert [m["text"] for m in msgs if m["type"] == "final"] == [alone]
    assert n_native > 300 and n_vosk > 300  # answered, not dropped
    assert "internal" not in native_codes | vosk_codes
    assert {"bad_json", "bad_field"} <= native_codes and "bad_json" in vosk_codes
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
