"""asr-engine: streaming Conformer/CTC speech recognition with blank-triggered layer skipping.

    import asr_engine

    engine = asr_engine.load(for_files=True)            # the bundled model, on ONNX Runtime when installed
    print(engine.transcribe(samples, sample_rate=8000).text)
    for r in engine.transcribe_files(["a.wav", "b.mp3"]):
        print(r.path, r.text, [w.to_dict() for w in r.words])
    engine = asr_engine.load()                          # for live streams: the streaming layout
    s = engine.session(sample_rate=16000)               # a live stream
    s.accept_audio(chunk); engine.step(); s.result().text; s.finish().text

`load` takes a checkpoint or ONNX export folder (default: the bundled model), the backend
('auto', 'onnx', 'torch'), and decoding options (beam, nbest, skip_threshold, hotwords, lm: an
LM folder or 'default'; rescore='whisper': a second pass with Whisper's decoder; two_pass: each streamed
utterance's final decoded again in full context; punctuate: finals and whole files written with punctuation and
casing, by default as the model recommends). Inference
imports numpy and ONNX Runtime only; torch is needed for training, export and the torch backend
(the 'train' extra).
"""

from __future__ import annotations

from pathlib import Path

from asr_engine.endpoint import EndpointConfig
from asr_engine.engine import DecodeOptions, Engine, Partial, Session, SessionOptions
from asr_engine.results import Result

__version__ = "0.1.0"
__all__ = ["DecodeOptions", "EndpointConfig", "Engine", "Partial", "Result", "Session", "SessionOptions", "load"]


_RECOMMENDED = "recommended"


def load(model: str | Path | None = None, *, backend: str = "auto", device: str = "cpu", threads: int = 0,
         lm: str | Path | None = _RECOMMENDED, lm_weight: float | None = None, length_bonus: float | None = None,
         lexicon_penalty: float | None = None, rescore: str | None = None, rescore_weight: float | None = None,
         for_files: bool = False, context: str | None = None, two_pass: bool = False,
         punctuate: str | Path | None = _RECOMMENDED, precision: str | None = None, lm_precision: str | None = None,
         **decode) -> Engine:
    """An Engine for a model folder (None: the bundled model). `decode`: DecodeOptions fields
    (beam, nbest, skip_threshold, hotwords, hotword_boost, chunk_frames, max_batch, auto_gain); `lm`: an
    LM folder or 'default' (the bundled LM) fused into beam search (needs beam > 1), with the weights
    tuned for it unless given (lexicon_penalty 0: without the LM's lexicon), or None. Without `beam`,
    the decoding the model recommends (its decoding.json: for the bundled model beam 16 with the bundled
    LM, unless `lm` says otherwise; greedy for a model without one); with `beam`, no LM unless `lm` names
    one. rescore='whisper': each utterance's beam rescored by whisper-base's decoder (the 'rescore' extra),
    weighted by rescore_weight (default: tuned). for_files: mostly whole files (larger ONNX steps), rather
    than live streams. context: "streaming" (the model's chunks, as live audio) or "full" (whole files:
    a 10.24 s attention chunk, the same weights); default: for_files without chunk_frames, what the model
    recommends (its decoding.json: full for the bundled model), else streaming. two_pass: streams as live audio
    and decodes each utterance's final again in full context (the same weights; the model folder must be a
    checkpoint, whose onnx-full export or torch weights the second pass runs). punctuate: finals and whole files
    written with punctuation and casing by 'default' (the bundled punctuation model) or a folder, or None;
    default: what the model recommends (its decoding.json: the bundled one for the bundled model); numbers (a
    DecodeOptions field): None (digits in punctuated results: "press 1", "$5.50"), True (digits also without
    punctuation) or False (words, as the recognizer says them). precision: "int8" (the encoder's MatMuls in
    int8, on ONNX Runtime) or "fp32"; default: what the model recommends (its decoding.json: fp32 for the bundled
    model), fp32 on torch.
    lm_precision: the LM step's linear layers, "fp32" or "int8" (ONNX Runtime on the CPU); default: what the
    model recommends on ONNX Runtime on the CPU (its decoding.json: int8 for the bundled model), else fp32."""
    from asr_engine.backend import (load_model, resolve_backend, resolve_context, resolve_decoding,
                                    resolve_lm_precision, resolve_punctuation)
    from asr_engine.punctuation import load_punctuator

    # here None is no LM and the default, _RECOMMENDED, is the model's: the CLI's None and 'none'
    decode["beam"], lm = resolve_decoding(model, decode.get("beam"), None if lm == _RECOMMENDED else (lm or "none"))
    if "hotwords" in decode:
        decode["hotwords"] = tuple(decode["hotwords"])
    if two_pass and context == "full":
        raise ValueError("two_pass streams the first pass: leave out context='full'")
    if (for_files or context is not None) and not two_pass:
        context = resolve_context(model, context, live=decode.get("chunk_frames") is not None)
    m = load_model(model, backend, device, threads, decode.get("chunk_frames"), for_files, context or "streaming",
                   precision=precision)
    final = load_model(model, backend, device, threads, context="full", precision=precision) if two_pass else None
    fusion = None
    if lm is not None:
        from asr_engine.lm.fusion import load_fusion

        on = resolve_backend(backend, device)
        fusion = load_fusion(lm, m.tokenizer, lm_weight, length_bonus, on, device, lexicon_penalty=lexicon_penalty,
                             precision=resolve_lm_precision(model, lm_precision, on, device))
    rescorer = None
    if rescore is not None:
        if rescore != "whisper":
            raise ValueError(f"rescore: 'whisper' is the one second pass there is, got {rescore!r}")
        from asr_engine.rescore import WhisperRescorer

        rescorer = WhisperRescorer.load(rescore_weight)
    punctuator = load_punctuator(resolve_punctuation(model, None if punctuate == _RECOMMENDED else
                                                     (punctuate or "none")))
    return Engine(m, DecodeOptions(lm=fusion, rescorer=rescorer, punctuator=punctuator, **decode), final_model=final)
