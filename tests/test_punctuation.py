"""Punctuation and casing (asr_engine.punctuation): the labels read from written text, the bundled model on text,
whole files and streams written with it (times kept, partials left alone), the options that turn it off, the
server's sessions, the CLI, and a training run."""

import json

import numpy as np
import pytest

import asr_engine
from asr_engine.audio import load_audio
from asr_engine.backend import bundled_model_dir
from asr_engine.engine import DecodeOptions, Engine, SessionOptions
from asr_engine.punctuation import DEFAULT_PUNCT_DIR, Punctuator, labelled_words, load_punctuator, scores, written
from asr_engine.text import normalize
from conftest import needs_punct

SAMPLES = [f"asr_engine/samples/sample{i}.wav" for i in (1, 2, 3)]


@pytest.fixture(scope="module")
def punct():
    return Punctuator(DEFAULT_PUNCT_DIR)


def test_written_text_becomes_the_recognizers_words_with_their_marks_and_casing():
    assert labelled_words("Mr. O'Brien, hi! Is it 7:30 -- or U.S.A. e-mail? McDonald's iPhone, I'm OK.") == [
        ("mr", 2, 1, "mr"), ("o'brien", 1, 3, "O'Brien"), ("hi", 2, 0, "hi"), ("is", 0, 1, "is"),
        ("it", 0, 0, "it"), ("seven", 0, 0, "seven"), ("thirty", 1, 0, "thirty"), ("or", 0, 0, "or"),
        ("usa", 2, 2, "usa"), ("e", 0, 0, "e"), ("mail", 3, 0, "mail"), ("mcdonald's", 0, 3, "McDonald's"),
        ("iphone", 1, 3, "iPhone"), ("i'm", 0, 1, "i'm"), ("ok", 2, 2, "ok")]
    assert labelled_words("") == [] and labelled_words("-- ...") == []
    # the words are always what the recognizer writes for the same text
    text = "Dial 911, then press #2; Dr. Smith's 3rd e-mail arrived at 5 p.m."
    assert [w for w, *_ in labelled_words(text)] == normalize(text).split()
    mixed = {"iphone": "iPhone"}
    assert [written(w, p, c, mixed) for w, p, c, _ in labelled_words("Is it an iPhone, NASA or Rome?")] == \
        ["Is", "it", "an", "iPhone,", "NASA", "or", "Rome?"]
    assert written("mcdonald", 0, 3, {}) == "Mcdonald"  # a mixed form the table lacks: capitalized


def test_scores_count_each_mark_and_the_capitals():
    gold_p, gold_c = np.array([0, 1, 0, 2, 0, 3]), np.array([1, 0, 0, 0, 1, 0])
    s = scores(gold_p, gold_p, gold_c, gold_c)
    assert s[","]["f1"] == s["."]["f1"] == s["?"]["f1"] == 1.0 and s["case_accuracy"] == 1.0
    s = scores(np.array([0, 0, 0, 2, 0, 2]), gold_p, np.zeros(6, int), gold_c)
    assert s[","]["recall"] == 0.0 and s["."]["precision"] == 0.5 and s["?"]["gold"] == 1
    assert s["capitals_f1"] == 0.0 and s["case_accuracy"] == pytest.approx(4 / 6, abs=1e-4)


@needs_punct
def test_the_bundled_model_writes_sentences(punct):
    """Sentences of our own, in no training source."""
    assert punct.text("how are you today") == "How are you today?"
    assert punct.text("i think we should go home now") == "I think we should go home now."
    assert punct.text("what time does the train leave") == "What time does the train leave?"
    assert punct.text("we visited new york and paris last year") == "We visited New York and Paris last year."
    assert punct.text("yes i will call you tomorrow morning") == "Yes, I will call you tomorrow morning."
    two = punct.text("where are you going tonight i am going to the cinema with my friends")
    assert two.startswith("Where are you going? ") and two.endswith(".")
    assert punct.write([]) == [] and punct.text("") == ""


@needs_punct
def test_long_transcripts_go_through_in_windows_and_each_word_is_written_once(punct):
    words = ("this is the first sentence and it is short " * 40).split()  # 360 words: four windows
    out = punct.write(words)
    assert len(out) == len(words) and [normalize(w) for w in out] == words
    assert out[0] == "This" and out[-1][-1] in ".?!"
    assert sum(w[-1] in ".?" for w in out) >= 20  # sentence ends inside later windows too


@needs_punct
def test_load_punctuator_names():
    assert load_punctuator(None) is None and load_punctuator("none") is None
    assert load_punctuator("default").path == DEFAULT_PUNCT_DIR
    with pytest.raises(ValueError, match="not a punctuation model folder"):
        load_punctuator("asr_engine/samples")


@pytest.fixture(scope="module")
def engines():
    """The bundled model greedy in full context as it recommends (punctuated), and without punctuation."""
    return (asr_engine.load(bundled_model_dir(), beam=1, for_files=True),
            asr_engine.load(bundled_model_dir(), beam=1, for_files=True, punctuate=None))


@needs_punct
def test_files_are_written_with_the_same_words_and_times(engines, punct):
    written_, raw = (e.transcribe_files(SAMPLES) for e in engines)
    assert engines[0].options.punctuator is not None and engines[1].options.punctuator is None
    for w, r in zip(written_, raw):
        assert w.text != r.text and normalize(w.text) == normalize(r.text) and w.text[0].isupper()
        assert w.text[-1] in ".?!"
        assert w.text == " ".join(x.word for x in w.words) and w.nbest == r.nbest
        assert [(x.start, x.end, x.confidence) for x in w.words] == [(x.start, x.end, x.confidence) for x in r.words]
        assert punct.result(w) == w  # written again from its words: the same
    off = engines[0].transcribe_files(SAMPLES[:1], SessionOptions(punctuate=False))[0]
    assert off.text == raw[0].text


@needs_punct
def test_stream_finals_are_written_and_partials_are_not():
    engine = asr_engine.load(bundled_model_dir(), beam=1)
    audio = load_audio(SAMPLES[1])
    partials = []
    s = engine.session()
    for i in range(0, len(audio), 3200):
        s.accept_audio(audio[i: i + 3200])
        engine.step()
        partials.append(s.result().text)
    final = s.finish()
    assert any(partials) and all(p == normalize(p) for p in partials)
    assert final.text[0].isupper() and final.text[-1] in ".?!"
    s2 = engine.session(options=SessionOptions(punctuate=False))
    s2.accept_audio(audio)
    assert s2.finish().text == normalize(final.text)
    # as the server runs it: the final is written by its deferred second pass, off the loop that steps every session
    for options, deferred in ((SessionOptions(), True), (SessionOptions(punctuate=False), False)):
        s3 = engine.session(options=options)
        s3.defer_second_pass = True
        s3.accept_audio(audio)
        first = s3.finish()
        assert first.text == normalize(final.text) and (first.second_pass is not None) == deferred
        if deferred:
            later = first.second_pass()
            assert later.text == final.text and later.second_pass is None
    # continuous mode: each utterance is written, and the stream joined is written once more as one text
    long = np.concatenate([audio, np.zeros(48000, np.float32), load_audio(SAMPLES[0])])
    from asr_engine.endpoint import EndpointConfig

    joined = engine.transcribe_arrays([long], ["x"], SessionOptions(endpoint=EndpointConfig()))[0]
    assert joined.text[0].isupper() and joined.text == " ".join(w.word for w in joined.words)


@needs_punct
def test_the_server_writes_native_finals_unless_a_session_says_not_and_leaves_vosk_as_vosk():
    websockets = pytest.importorskip("websockets")  # noqa: F841
    import asyncio

    from asr_engine.backend import load_model
    from asr_engine.server.client import stream_file
    from servers import Running, vosk_text

    engine = Engine(load_model(None, "auto"), DecodeOptions(punctuator=load_punctuator("default")))
    r = Running(engine)

    def run(coro):
        return asyncio.run(asyncio.wait_for(coro, 120))

    def final_texts(msgs):
        return [m["text"] for m in msgs if m["type"] == "final"]

    try:
        msgs = run(stream_file(r.url + "/", SAMPLES[1]))
        (text,) = final_texts(msgs)
        assert text[0].isupper() and text[-1] in ".?!"
        assert all(m["text"] == normalize(m["text"]) for m in msgs if m["type"] == "partial")
        assert final_texts(run(stream_file(r.url + "/", SAMPLES[1], start={"punctuate": False}))) == [normalize(text)]
        with pytest.raises(RuntimeError, match="'punctuate' must be bool"):
            run(stream_file(r.url + "/", SAMPLES[1], start={"punctuate": "yes"}))
        assert run(vosk_text(r.url, SAMPLES[1])) == normalize(text)
        import urllib.request

        info = json.loads(urllib.request.urlopen(r.url.replace("ws://", "http://") + "/info", timeout=10).read())
        assert info["punctuated"] is True and info["numbers"] == "digits"
    finally:
        r.stop()


@needs_punct
def test_the_command_line_writes_unless_told_not_to(capsys, tmp_path):
    from asr_engine.cli import main

    base = ["transcribe", "--model", str(bundled_model_dir()), "--beam", "1", "-q", SAMPLES[1]]
    assert main(base) == 0
    written_ = capsys.readouterr().out.strip().split("\t")[-1]
    assert main([*base, "--punctuate", "none"]) == 0
    raw = capsys.readouterr().out.strip().split("\t")[-1]
    assert written_[0].isupper() and normalize(written_) == raw != written_
    assert main([*base, "--punctuate", str(tmp_path)]) == 2
    assert "--punctuate" in capsys.readouterr().err
    # a model whose decoding.json names no punctuation model writes as the recognizer hears
    assert main(["transcribe", "--model", "tests/models/tiny", "-q", "--beam", "1", SAMPLES[1]]) == 0
    tiny = capsys.readouterr().out.strip().split("\t")[-1]
    assert tiny == normalize(tiny)


@needs_punct  # (where the model was left out, conftest takes the recommendation away)
def test_a_decoding_json_names_a_punctuation_model_or_is_refused(tmp_path):
    from asr_engine.backend import recommended_decoding, resolve_punctuation

    (tmp_path / "decoding.json").write_text('{"beam": 1, "punctuate": "default"}')
    assert resolve_punctuation(tmp_path, None) == "default" and resolve_punctuation(tmp_path, "none") is None
    (tmp_path / "decoding.json").write_text('{"beam": 1, "punctuate": "p"}')
    assert recommended_decoding(tmp_path)["punctuate"] == str(tmp_path / "p")
    (tmp_path / "decoding.json").write_text('{"beam": 1, "punctuate": 3}')
    with pytest.raises(ValueError, match="punctuat"):
        recommended_decoding(tmp_path)
    (tmp_path / "decoding.json").write_text('{"beam": 1}')
    assert resolve_punctuation(tmp_path, None) is None


def test_training_writes_a_model_that_loads_and_is_measured(tmp_path, monkeypatch):
    """A short run on a few sentences in place of the registry sources."""
    from asr_engine import punct_train

    talk = ["Hello there, how are you?", "I am fine, thank you.", "Where is the station?", "It is near the park.",
            "Call Mr. Smith at noon.", "We met in New York last May."] * 100
    talk = [f"{s} Number {i}." if i % 3 else s for i, s in enumerate(talk)]  # 400 distinct: 2% held out
    monkeypatch.setattr(punct_train, "SOURCES", {"talk": lambda: talk})
    meta = punct_train.train(tmp_path / "m", steps=30, batch=8, log=lambda m: None)
    p = Punctuator(tmp_path / "m")
    assert len(p.write("hello there how are you".split())) == 5
    saved = json.loads((tmp_path / "m" / "punct.json").read_text())
    assert saved == meta and meta["heldout"]["words"] > 0 and meta["vocab"] == len(p.ids)
    monkeypatch.setattr(punct_train, "SOURCES", {"empty": lambda: []})
    with pytest.raises(ValueError, match="gives no sentences"):
        punct_train.train(tmp_path / "n", steps=1)
