"""Numbers written as figures (asr_engine.itn): the rules on spoken words, punctuation around them, results whose
words merge (times, confidences, the recognizer's words kept), the engine's and the command line's options, and
fuzzed word sequences that must never break it."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asr_engine.decoding import Word
from asr_engine.engine import DecodeOptions, Engine, SessionOptions
from asr_engine.itn import numbers_written, write_numbers, written_result
from asr_engine.results import Result, join_results
from asr_engine.text import normalize
from conftest import needs_punct

DEV_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev_real"


@pytest.mark.parametrize("spoken, written", [
    # numbers of two words or more, or of ten and over, as figures; lone small ones stay words
    ("your call is number twenty three in the queue", "your call is number 23 in the queue"),
    ("one of the best and two of the worst", "one of the best and two of the worst"),
    ("room one hundred five", "room 105"),
    ("it was forty two", "it was 42"),
    ("one hundred twenty three thousand four hundred fifty six", "123,456"),
    ("twenty eight point eight kilobit", "28.8 kilobit"),
    ("a hundred people and thousands more", "a hundred people and thousands more"),
    ("millions", "millions"),
    ("in the two thousands", "in the two thousands"),
    ("five million", "5 million"),
    ("two point five billion", "2.5 billion"),
    # after the words that take a figure
    ("please press one for sales or two for support", "please press 1 for sales or two for support"),
    ("press zero for mailbox options", "press 0 for mailbox options"),
    ("turn to page three", "turn to page 3"),
    # read digit by digit
    ("call nine one one", "call 911"),
    ("extension one two three four", "extension 1234"),
    ("five five five oh one two three", "5550123"),
    # a toll-free prefix said as a number: "eight hundred five" is not three digits read one by one
    ("my number is eight hundred five five five one two one two", "my number is 8005551212"),
    ("call one eight hundred five five five oh one nine nine", "call 18005550199"),
    ("it costs eight hundred five dollars", "it costs $805"),
    ("one hundred five five five one two one two", "105 551212"),  # no area code starts with 1
    ("the eight hundredth one two three four five six seven", "the 800th 1234567"),
    ("zero zero seven", "007"),
    ("two three", "two three"),
    ("it is one thirty", "it is one thirty"),  # not "one 30"
    ("seven eleven", "seven eleven"),
    # years, decades, times
    ("in nineteen ninety nine", "in 1999"),
    ("in two thousand five", "in 2005"),
    ("nineteen oh five", "1905"),
    ("the nineteen sixties", "the 1960s"),
    ("meet me at three thirty", "meet me at 3:30"),
    ("it starts at ten oh five p m", "it starts at 10:05 p.m."),
    ("nine a m", "9 a.m."),
    ("three p m today", "3 p.m. today"),
    ("i am one", "i am one"),
    ("which one am i to take", "which one am i to take"),
    ("i woke up at six am", "i woke up at 6 a.m."),
    ("six thirty am", "6:30 a.m."),
    ("from two thirty to four", "from 2:30 to four"),
    # money, percentages, signs
    ("it costs five dollars and fifty cents", "it costs $5.50"),
    ("five million dollars", "$5 million"),
    ("five cents", "5 cents"),
    ("ninety nine point five percent", "99.5%"),
    ("minus five degrees", "-5 degrees"),
    # ordinals
    ("the first time", "the first time"),
    ("wait a second", "wait a second"),
    ("the twenty first century", "the 21st century"),
    ("on march first", "on march 1st"),
    ("on the fourth of july", "on the fourth of july"),
    ("four march nineteen ninety nine", "4 march 1999"),
    ("we four may go", "we four may go"),
    ("at two fifty dollars", "at 2:50 dollars"),
    ("", ""),
    ("hello world", "hello world"),
])
def test_spoken_numbers_are_written_as_english_writes_them(spoken, written):
    assert numbers_written(spoken) == written


def test_punctuation_keeps_numbers_apart_and_stays_around_them():
    assert write_numbers("Press one, two, or three.".split()) == [(1, 2, "1,")]
    assert write_numbers("Call nine one one.".split()) == [(1, 4, "911.")]
    assert write_numbers("Dial five five five, one two one two.".split()) == [(1, 4, "555,"), (4, 8, "1212.")]
    assert write_numbers("It starts at three thirty p m.".split()) == [(3, 5, "3:30"), (5, 7, "p.m.")]  # one stop
    assert write_numbers("It cost five million dollars!".split()) == [(2, 3, "$5"), (3, 5, "million!")]
    assert write_numbers('He said "twenty three".'.split()) == [(2, 4, '"23".')]
    assert write_numbers("Twenty, three".split()) == [(0, 1, "20,")]
    # a comma the punctuation model put between a key word and its number goes
    assert write_numbers("Press, one to record.".split()) == [(0, 1, "Press"), (1, 2, "1")]
    assert write_numbers("To leave, press, nine one one.".split()) == [(2, 3, "press"), (3, 6, "911.")]
    assert write_numbers("Well, one of them.".split()) == []


def _words(text: str, step: float = 0.5) -> list[Word]:
    return [Word(w, i * step, i * step + 0.4, 0.9 - 0.01 * i) for i, w in enumerate(text.split())]


def test_a_result_has_its_numbers_merged_with_their_times_and_keeps_the_spoken_words():
    spoken = _words("dial nine one one at three thirty p m")
    r = Result("x", text="dial nine one one at three thirty p m", words=spoken, nbest=["dial nine one one"])
    w = written_result(r)
    assert w.text == "dial 911 at 3:30 p.m." == " ".join(x.word for x in w.words)
    dial, emergency, at, time, pm = w.words  # a word of the result is never two words: "3:30" and "p.m."
    assert (emergency.start, emergency.end) == (spoken[1].start, spoken[3].end)
    assert emergency.confidence == min(x.confidence for x in spoken[1:4])
    assert (time.start, time.end, pm.start, pm.end) == (spoken[5].start, spoken[6].end, spoken[7].start, spoken[8].end)
    assert dial == spoken[0] and at == spoken[4]
    assert w.spoken == spoken and w.spoken_text == r.text and w.nbest == r.nbest
    assert written_result(w) == w  # written again: from its spoken words, the same
    # written with punctuation first (one form a spoken word): the marks stay
    p = written_result(r, ["Dial", "nine", "one", "one,", "at", "three", "thirty", "p", "m."])
    assert p.text == "Dial 911, at 3:30 p.m." and p.spoken == spoken
    assert written_result(Result("e", error="bad")).error == "bad"
    assert written_result(Result("empty")).text == ""
    # a stream's utterances joined keep the spoken words of each
    joined = join_results("s", [w, Result("y", text="hi", words=_words("hi"))], 9.0)
    assert joined.spoken_text == r.text + " hi" and joined.text == "dial 911 at 3:30 p.m. hi"
    assert join_results("s", [r, r], 1.0).spoken is None


_VOCAB = ("zero one two three four five six seven eight nine ten eleven twelve nineteen twenty thirty ninety "
          "hundred thousand million billion first second thirtieth millionth hundreds oh o a m am pm "
          "p and point minus percent dollars dollar cents cent euros press dial at page march may sixties "
          "the of hello i").split()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_VOCAB), st.sampled_from(["", "", "", ",", ".", "?"])),
                min_size=1, max_size=14))
def test_any_word_sequence_gives_ordered_spans_and_a_result_whose_spoken_words_are_kept(seq):
    forms = [w + p for w, p in seq]
    spoken = [normalize(w) or w for w, _ in seq]
    spans = write_numbers(forms, spoken)
    at = 0
    for start, end, text in spans:
        assert at <= start < end <= len(forms) and text.strip()
        assert " " not in text
        at = end
    words = [Word(s, i, i + 0.5, 0.5) for i, s in enumerate(spoken)]
    r = written_result(Result("f", text=" ".join(spoken), words=words), forms)
    assert r.spoken == words and r.text == " ".join(w.word for w in r.words)
    assert all(a.end <= b.start for a, b in zip(r.words, r.words[1:]))
    assert len(r.words) == len(words) - sum(end - start - 1 for start, end, _ in spans)


def test_the_engine_writes_numbers_with_its_punctuation_or_as_told(monkeypatch):
    from asr_engine.backend import load_model

    model = load_model(None, "auto")  # the tests' tiny model: no punctuation model of its own
    r = Result("x", text="press one two three", words=_words("press one two three"))
    plain = Engine(model, DecodeOptions())
    assert not plain.writes() and plain.written(r) is r  # no punctuation model: words as heard
    digits = Engine(model, DecodeOptions(numbers=True))
    assert digits.writes() and digits.written(r).text == "press 123"
    assert digits.written(r, SessionOptions(punctuate=False)) is r  # a session that asks for the words
    assert Engine(model, DecodeOptions(numbers=False)).written(r) is r


class _Capitalize:
    """A punctuator that capitalizes the first word and ends with a full stop (the engine calls `result`)."""

    def result(self, r):
        import dataclasses

        spoken = r.words if r.spoken is None else r.spoken
        forms = [w.word for w in spoken]
        forms[0], forms[-1] = forms[0].capitalize(), forms[-1] + "."
        return dataclasses.replace(r, words=[dataclasses.replace(w, word=f) for w, f in zip(spoken, forms)],
                                   text=" ".join(forms), spoken=list(spoken))


def test_punctuated_results_get_numbers_unless_words_are_asked_for():
    from asr_engine.backend import load_model

    model = load_model(None, "auto")
    r = Result("x", text="press nine one one now", words=_words("press nine one one now"))
    assert Engine(model, DecodeOptions(punctuator=_Capitalize())).written(r).text == "Press 911 now."
    words = Engine(model, DecodeOptions(punctuator=_Capitalize(), numbers=False)).written(r)
    assert words.text == "Press nine one one now." and words.spoken_text == r.text


@needs_punct
@pytest.mark.skipif(not (DEV_REAL / "audio" / "vm-leavemsg.flac").is_file(), reason="needs ../shared/data/dev_real")
def test_the_command_line_writes_digits_unless_told_words(capsys):
    """A real recorded prompt ("Press 5 to leave a message"), the bundled model greedy in full context."""
    from asr_engine.backend import bundled_model_dir
    from asr_engine.cli import main

    base = ["transcribe", "--model", str(bundled_model_dir()), "--beam", "1", "-q", str(DEV_REAL / "audio" /
                                                                                       "vm-leavemsg.flac")]

    def text(*extra):
        assert main([*base, *extra]) == 0
        return capsys.readouterr().out.strip().split("\t")[-1]

    written = text()
    assert written.startswith("Press 5 ")
    assert text("--numbers", "words") == written.replace("5", "five")
    assert text("--punctuate", "none", "--numbers", "digits") == normalize(written).replace("five", "5")
    assert text("--punctuate", "none") == normalize(written)


@needs_punct
@pytest.mark.skipif(not (DEV_REAL / "audio" / "vm-leavemsg.flac").is_file(), reason="needs ../shared/data/dev_real")
def test_the_server_sends_finals_with_digits_and_vosk_the_words():
    """Over a real port: a native session's final has the figure, one that asks for the words and Vosk's route
    have the words."""
    import asyncio

    import asr_engine
    from asr_engine.backend import bundled_model_dir
    from asr_engine.server.client import stream_file
    from servers import Running, vosk_text

    path = str(DEV_REAL / "audio" / "vm-leavemsg.flac")
    r = Running(asr_engine.load(bundled_model_dir(), beam=1))

    def run(coro):
        return asyncio.run(asyncio.wait_for(coro, 120))

    try:
        (final,) = [m for m in run(stream_file(r.url + "/", path)) if m["type"] == "final"]
        assert final["text"].startswith("Press 5 ") and "5" in [w["word"] for w in final["words"]]
        (words,) = [m["text"] for m in run(stream_file(r.url + "/", path, start={"punctuate": False}))
                    if m["type"] == "final"]
        assert words == normalize(final["text"]) and words.startswith("press five ")
        assert run(vosk_text(r.url, path)) == words
    finally:
        r.stop()
