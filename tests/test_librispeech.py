import pytest
import soundfile as sf

from asr_engine.data.librispeech import read_librispeech
from asr_engine.data.loader import load_features
from asr_engine.model.fbank import Fbank
from asr_engine.manifest import read_corpus
from asr_engine.tokenizer import CharTokenizer

from conftest import tone


def _tree(root, missing=False):
    """A tiny corpus in the LibriSpeech layout: split/speaker/chapter/{id.flac, spk-chap.trans.txt}."""
    utts = {("19", "198"): ["ONE TWO", "THREE"], ("26", "495"): ["FOUR FIVE SIX"]}
    for (spk, chap), texts in utts.items():
        d = root / "train-clean-100" / spk / chap
        d.mkdir(parents=True)
        lines = []
        for i, text in enumerate(texts):
            uid = f"{spk}-{chap}-{i:04d}"
            if not (missing and i == 1):
                sf.write(d / f"{uid}.flac", tone(1.0 + i), 16000)
            lines.append(f"{uid} {text}")
        (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")


def test_reads_the_layout(tmp_path):
    _tree(tmp_path)
    utts = read_librispeech(tmp_path)
    assert [u.audio.name for u in utts] == ["19-198-0000.flac", "19-198-0001.flac", "26-495-0000.flac"]
    assert [u.text for u in utts] == ["ONE TWO", "THREE", "FOUR FIVE SIX"]
    assert utts[1].duration == pytest.approx(2.0) and utts[0].extra["speaker"] == "19"
    assert read_corpus(tmp_path) == utts  # a folder is read as LibriSpeech
    fs = load_features(tmp_path, CharTokenizer(), Fbank())
    assert len(fs) == 3 and fs.texts[2] == "FOUR FIVE SIX" and fs.tokens[0][:3] == CharTokenizer().encode("one")


def test_missing_audio_and_wrong_folders_are_clear_errors(tmp_path):
    _tree(tmp_path / "a", missing=True)
    with pytest.raises(ValueError, match="missing or unreadable"):
        read_librispeech(tmp_path / "a")
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match="not a LibriSpeech"):
        read_librispeech(tmp_path / "b")
