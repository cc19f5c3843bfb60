"""asr_engine.data.fotaq: Flight of the Amazon Queen's bundle, conversations and speech, on a small bundle written
here in the game's layout (the real one is 54 MB and comes from a Debian package)."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import soundfile as sf

from asr_engine.cli import main
from asr_engine.data.fotaq import build_corpus, dialogue_lines, read_bundle, speech
from asr_engine.data.recorded import split_groups, usable


def _string(text: str, start: int, align: int) -> bytes:
    """A length byte and the text, padded so that what follows starts on `align` (offsets from the data start)."""
    raw = bytes([len(text)]) + text.encode("latin-1")
    end = start + len(raw)
    return raw + b"\0" * (((end + align - 1) & ~(align - 1)) - end)


def _line_table(lines: list[tuple[int, str]], start: int) -> bytes:
    out = b""
    for ident, text in lines:
        head = b"\0\0" + struct.pack(">h", ident)
        out += head + _string(text, start + len(out) + len(head), 4)
    return out


def conversation(talk_key: int, joe: list[tuple[int, str]], person: list[tuple[int, str]],
                 second: tuple[str, str] = ("", "")) -> bytes:
    """A .DOG entry: the AmBk header, the fields Talk::load reads, a one-level tree, Joe's lines (the first, id 0,
    his opening line), the person's lines and the second-visit pair."""
    levels = 1
    joe_at = 32 + levels * 96
    joe_table = _line_table(joe, joe_at)
    person_at = joe_at + len(joe_table)
    person_table = _line_table(person, person_at)
    second_at = person_at + len(person_table)
    s1 = _string(second[0], second_at, 2)
    s2 = _string(second[1], second_at + len(s1), 2)
    head = struct.pack(">hhhhh", levels, 7, talk_key, len(joe) - 1, len(person)) + b"\0" * 12
    head += struct.pack(">HHH", person_at, 0, second_at)
    body = head + b"\0" * (32 - len(head)) + b"\0" * (levels * 96) + joe_table + person_table + s1 + s2
    return b"AmBk" + b"\0" * 16 + body


def mp3(seconds: float, sr: int = 11025) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr, format="MP3")
    return buf.getvalue()


def bundle_file(path, entries: dict[str, bytes], compression: int = 1):
    table = b""
    offset = 15 + 21 * len(entries)
    for name, data in sorted(entries.items()):
        table += name.encode().ljust(12, b"\0") + b"\1" + struct.pack(">II", offset, len(data))
        offset += len(data)
    path.write_bytes(b"QTBL" + b"CEM10\0" + b"\0\0" + bytes([compression]) + struct.pack(">H", len(entries)) +
                     table + b"".join(d for _, d in sorted(entries.items())))
    return path


@pytest.fixture
def game(tmp_path):
    bob = conversation(6, joe=[(0, "Hello there."), (6, "Who are you?*02I mean it."), (0x1e, "Goodbye.")],
                       person=[(6, "I'm Bob.*GDHere*FLis a lamp."), (0x1e, "Chunga warunga!")],
                       second=("You again?", "Me again."))
    tam = conversation(57, joe=[(0, "Nice day, Tam.")], person=[])
    clips = {  # the speech entries the game has; 060006J3 and 06001EJ1's twin are not spoken
        "06SSSSJ1.SB": 1.0, "060006J1.SB": 0.8, "060006J2.SB": 0.6, "060006P1.SB": 0.5, "060006P3.SB": 0.4,
        "060006P4.SB": 0.4, "06001EP1.SB": 0.7, "06001EJ1.SB": 0.5, "06XXXXP1.SB": 0.6, "06XXXXJ1.SB": 0.5,
        "57SSSSJ1.SB": 0.9}
    clips |= {"JOE00011.SB": 0.6, "JOE00411.SB": 0.7, "JOE00422.SB": 0.5}  # Joe's response 1, descriptions 1, 2
    entries = {name: mp3(sec) for name, sec in clips.items()}
    strings = ["Nice hat.", "A lamp.*03It is lit.", "hat", "lamp", "door", "ROOM1", "ROOM2", *(["Verb"] * 12),
               "It doesn't seem to open*03", *(f"Response {k}" for k in range(2, 41)), "more.ACT"]
    entries |= {"BOB1.DOG": bob, "TAM1.DOG": tam, "QUEEN.JAS": b"AmBk" + b"\0" * 16 + struct.pack(">HHHH", 2, 3, 5, 2),
                "QUEEN2.JAS": "\r\n".join(strings).encode("latin-1")}
    return bundle_file(tmp_path / "queen.1c", entries)


def test_conversations_name_the_clip_of_each_spoken_segment(game):
    lines = {ln.clip: (ln.text, ln.conversation, ln.speaker) for ln in dialogue_lines(read_bundle(game))}
    assert lines["06SSSSJ1.SB"] == ("Hello there.", "BOB1.DOG", "JOE")  # the opening line, voiced apart
    assert lines["060006J1.SB"] == ("Who are you?", "BOB1.DOG", "JOE")
    assert lines["060006J2.SB"] == ("I mean it.", "BOB1.DOG", "JOE")  # after the stage direction *02
    assert lines["060006P1.SB"] == ("I'm Bob.", "BOB1.DOG", "BOB")
    # *GD (a gesture) and *FL (a turn) end segments too: "Here" is P2 (no speech entry for it here: not listed),
    # "is a lamp." P3
    assert lines["060006P3.SB"] == ("is a lamp.", "BOB1.DOG", "BOB")
    assert "060006P4.SB" not in lines  # a speech entry no line names
    assert lines["06001EP1.SB"] == ("Chunga warunga!", "BOB1.DOG", "BOB")
    assert lines["06001EJ1.SB"] == ("Goodbye.", "BOB1.DOG", "JOE")
    assert lines["06XXXXP1.SB"] == ("You again?", "BOB1.DOG", "BOB")
    assert lines["06XXXXJ1.SB"] == ("Me again.", "BOB1.DOG", "JOE")
    assert lines["57SSSSJ1.SB"] == ("Nice day, Tam.", "TAM1.DOG", "JOE")
    assert len(lines) == 10


def test_joes_descriptions_and_responses_name_their_clips(game):
    from asr_engine.data.fotaq import description_lines

    lines = {ln.clip: ln.text for ln in description_lines(read_bundle(game))}
    assert lines == {"JOE00011.SB": "It doesn't seem to open", "JOE00411.SB": "Nice hat.",
                     "JOE00422.SB": "It is lit."}


def test_speech_is_decoded_and_resampled_to_16k(game):
    b = read_bundle(game)
    x = speech(b, "060006J1.SB")
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) / 16000 - 0.8) < 0.08  # MP3's encoder delay and padding add a few ms
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * 16000 / len(x) - 220) < 5


def test_lines_of_gibberish_are_not_usable():
    words = {"who", "are", "you", "i", "work", "for", "the", "company", "chunga"}
    assert usable("Who are you?", words)
    assert usable("I work for Floda, the company.", words)  # a name, capitalised mid-sentence
    assert not usable("Floda!", {"the"})  # a first word's capital says nothing
    assert not usable("Chunga warunga!", words)
    assert not usable("Frrblrt, trgn smrrldn.", words)
    assert not usable("...", words)
    assert not usable("I work for Floda, the company.", words, names=False)  # a script in capitals shows no names


def test_held_out_groups_depend_only_on_names():
    durations = {f"G{i}": 10.0 for i in range(20)}
    held = split_groups(durations, 0.12)
    assert 2 <= len(held) <= 3
    assert split_groups(dict(reversed(list(durations.items()))), 0.12) == held


def test_build_corpus_writes_audio_and_the_two_manifests(game, tmp_path, monkeypatch):
    words = {"hello", "there", "who", "are", "you", "i", "mean", "it", "i'm", "bob", "is", "a", "lamp", "goodbye",
             "again", "me", "nice", "day"}
    import asr_engine.data.recorded as recorded

    monkeypatch.setattr(recorded, "split_groups", lambda durations, fraction: {"TAM"})
    stats = build_corpus(read_bundle(game), tmp_path / "corpus", words)
    train = [json.loads(x) for x in open(tmp_path / "corpus" / "manifest.jsonl")]
    held = [json.loads(x) for x in open(tmp_path / "corpus" / "heldout.jsonl")]
    assert [r["text"] for r in held] == ["nice day tam"]
    assert held[0]["group"] == "TAM" and held[0]["speaker"] == "JOE"
    assert "chunga warunga" not in {r["text"] for r in train}
    assert len(train) == 8 and stats["manifest.jsonl"]["utterances"] == 8
    for r in train + held:
        info = sf.info(tmp_path / "corpus" / r["audio"])
        assert info.samplerate == 16000 and abs(info.duration - r["duration"]) < 1e-3
    assert stats["heldout_groups"] == ["TAM"]
    with_joe = build_corpus(read_bundle(game), tmp_path / "corpus2", words | {"nice", "hat", "lit"},
                            descriptions=True)
    train2 = [json.loads(x) for x in open(tmp_path / "corpus2" / "manifest.jsonl")]
    assert {r["text"] for r in train2} - {r["text"] for r in train} == {"nice hat", "it is lit"}
    assert with_joe["heldout.jsonl"] == stats["heldout.jsonl"]


def test_not_a_bundle_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "x.1c").write_bytes(b"RIFF" + b"\0" * 40)
    with pytest.raises(ValueError, match="not a Flight of the Amazon Queen bundle"):
        read_bundle(tmp_path / "x.1c")
    bundle_file(tmp_path / "t.1c", {"A.DOG": b"x" * 50})
    (tmp_path / "cut.1c").write_bytes((tmp_path / "t.1c").read_bytes()[:-10])
    with pytest.raises(ValueError, match="past the end"):
        read_bundle(tmp_path / "cut.1c")
    assert main(["data", "fotaq", "--out", str(tmp_path / "o"), "--bundle", str(tmp_path / "missing.1c")]) == 2
    assert "flight-of-the-amazon-queen" in capsys.readouterr().err
    assert main(["data", "fotaq", "--out", str(tmp_path / "o"), "--bundle", str(tmp_path / "x.1c")]) == 2
    assert main(["data", "fotaq", "--out", str(tmp_path / "o"), "--words", str(tmp_path / "no-words.txt")]) == 2
    assert "--words" in capsys.readouterr().err  # not mistaken for a missing game


def test_a_conversation_in_another_layout_is_a_clear_error(tmp_path):
    bundle_file(tmp_path / "q.1c", {"BAD.DOG": b"AmBk" + b"\0" * 16 + b"\0\1"})
    with pytest.raises(ValueError, match="BAD.DOG is not a conversation"):
        dialogue_lines(read_bundle(tmp_path / "q.1c"))
