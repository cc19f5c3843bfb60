"""asr_engine.data.drascula: Drascula's text arrays and speech files, on a small game folder written here in the
game's layout (the real one comes from a Debian package)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import soundfile as sf

from asr_engine.cli import main
from asr_engine.data.drascula import build_corpus, read_texts, speech, spoken_lines

ARRAYS = ("text", "textd", "textb", "textbj", "texte", "texti", "textl", "textp", "textt", "textvb", "textsys",
          "texthis", "textverbs", "textmisc", "textd1")


def text_block(strings: list[str]) -> bytes:
    """One language's block of a text array: line 0 empty, each later line after a 2-byte size of its slot."""
    block = b"\0\0" + struct.pack(">H", 2)
    for s in strings[1:]:
        slot = s.encode("latin-1") + b"\0"
        block += struct.pack(">H", len(slot) + 2) + slot
    return block + b"\0\0"


def drascula_dat(texts: dict[str, list[list[str]]], languages: int = 2) -> bytes:
    out = b"DRASCULA" + bytes([6])
    tables = (4, 4, 4, 2, 4, 2, 4, 2, 2, 20, 20, 10, 8)
    for i, size in enumerate(tables):  # a few entries in some tables: their sizes must be skipped right
        n = i % 3
        out += struct.pack(">H", n) + b"\x07" * (n * size)
    out += struct.pack(">H", languages)
    for name in ARRAYS:
        per_language = texts.get(name, [[""]] * languages)
        out += struct.pack(">H", len(per_language[0]))
        for strings in per_language:
            block = text_block(strings)
            out += struct.pack(">H", len(block)) + block
    return out


def als(seconds: float, freq: float = 300.0) -> bytes:
    t = np.arange(int(seconds * 11025)) / 11025
    return (128 + 60 * np.sin(2 * np.pi * freq * t)).astype(np.uint8).tobytes()


@pytest.fixture
def game(tmp_path):
    folder = tmp_path / "en"
    folder.mkdir()
    texts = {"text": [["", "THAT'S THE SECOND BIGGEST DOOR", "NOT REALLY"], ["", "ES LA SEGUNDA", "NO"]],
             "textd": [["", "HEY IGOR, HOW IS EVERYTHING GOING?"], ["", "COMO VA TODO, IGOR?"]],
             "texti": [["", "MASTER, THIS IS NOT WORKING", "I'M SORRY MASTER"], ["", "MAESTRO", "LO SIENTO"]]}
    (folder / "drascula.dat").write_bytes(drascula_dat(texts))
    for name, sec in {"1.ALS": 1.0, "2.ALS": 0.5, "D1.ALS": 1.5, "I1.ALS": 1.2, "I2.ALS": 0.8, "I9.ALS": 0.3,
                      "S1.ALS": 0.4}.items():
        (folder / name).write_bytes(als(sec))
    (folder / "3.ALS").symlink_to(folder / "1.ALS")
    return folder


def test_texts_are_read_by_language(game):
    en = read_texts(game / "drascula.dat")
    assert en["text"] == ["", "THAT'S THE SECOND BIGGEST DOOR", "NOT REALLY"]
    assert en["texti"][2] == "I'M SORRY MASTER"
    assert read_texts(game / "drascula.dat", 1)["textd"][1] == "COMO VA TODO, IGOR?"
    with pytest.raises(ValueError, match="no language 5"):
        read_texts(game / "drascula.dat", 5)


def test_each_file_gets_the_line_its_prefix_and_number_name(game):
    lines = {p.name: (text, who) for p, text, who in spoken_lines(game)}
    assert lines == {"1.ALS": ("THAT'S THE SECOND BIGGEST DOOR", "JOHN"), "2.ALS": ("NOT REALLY", "JOHN"),
                     "D1.ALS": ("HEY IGOR, HOW IS EVERYTHING GOING?", "DRASCULA"),
                     "I1.ALS": ("MASTER, THIS IS NOT WORKING", "IGOR"), "I2.ALS": ("I'M SORRY MASTER", "IGOR")}
    # I9 has no line 9, S is no character's prefix, 3.ALS is a link


def test_speech_is_unsigned_8_bit_at_11025_hz(game):
    x = speech(game / "D1.ALS")
    assert x.dtype == np.float32 and abs(len(x) / 16000 - 1.5) < 1e-3
    assert 0.4 < np.abs(x).max() < 0.5
    assert abs(np.argmax(np.abs(np.fft.rfft(x))) * 16000 / len(x) - 300) < 3


def test_build_corpus_never_holds_out_the_hero(game, tmp_path):
    words = {"that's", "the", "second", "biggest", "door", "not", "really", "hey", "igor", "how", "is",
             "everything", "going", "master", "this", "working", "i'm", "sorry"}
    stats = build_corpus(game, tmp_path / "c", words, heldout_fraction=0.3)
    train = [json.loads(x) for x in open(tmp_path / "c" / "manifest.jsonl")]
    held = [json.loads(x) for x in open(tmp_path / "c" / "heldout.jsonl")]
    assert {r["speaker"] for r in held} and "JOHN" not in {r["speaker"] for r in held}
    assert {r["text"] for r in train + held} == {"that's the second biggest door", "not really",
                                                "hey igor how is everything going", "master this is not working",
                                                "i'm sorry master"}
    assert stats["heldout_groups"] == sorted({r["group"] for r in held})
    assert sf.info(tmp_path / "c" / train[0]["audio"]).samplerate == 16000
    # a rerun reuses the audio and writes the same manifests
    before = (tmp_path / "c" / "manifest.jsonl").read_text()
    assert build_corpus(game, tmp_path / "c", words, heldout_fraction=0.3) == stats
    assert (tmp_path / "c" / "manifest.jsonl").read_text() == before


def test_bad_data_file_is_a_clear_error(game, tmp_path, capsys):
    (tmp_path / "x.dat").write_bytes(b"DRASCULA" + bytes([4]) + b"\0" * 20)
    with pytest.raises(ValueError, match="version 4"):
        read_texts(tmp_path / "x.dat")
    (tmp_path / "t.dat").write_bytes((game / "drascula.dat").read_bytes()[:-30])
    with pytest.raises(ValueError, match="truncated"):
        read_texts(tmp_path / "t.dat")
    assert main(["data", "drascula", "--out", str(tmp_path / "o"), "--folder", str(tmp_path / "nowhere")]) == 2
    assert "apt-get install drascula" in capsys.readouterr().err
