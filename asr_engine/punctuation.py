"""Punctuation and casing for transcripts: the recognizer writes lower-case words without punctuation
("please enter your phone number starting with the area code"); a small model trained here on text
writes them as people do ("Please enter your phone number, starting with the area code.").

For each word it predicts the punctuation after it (none, comma, full stop, question mark) and its
casing (lower, Capitalized, UPPER, or a mixed form such as "McDonald" from the model's table). A
bidirectional GRU over word embeddings, run by ONNX Runtime (no torch at run time); long transcripts
go through it in overlapping windows of words. Its training (`asr_engine.punct_train`, `asr-engine
punct train`) reads the same registry text sources as the language model. Only whole results are
written this way (files, and the finals of streams); partials stay as the recognizer hears them.

Our own model, not a library's: the punctuation models on the package registries (e.g.
deepmultilingualpunctuation, punctuators) download their weights at run time, which this project
does not do, and weigh 100s of MB; this one is a few MB and trains on a CPU in minutes.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from asr_engine.text import normalize

__all__ = ["PUNCT", "CASES", "Punctuator", "labelled_words", "labels_from", "load_punctuator", "scores", "written",
           "DEFAULT_PUNCT_DIR"]

DEFAULT_PUNCT_DIR = Path(__file__).parent / "models" / "default-punct"
PUNCT = ("", ",", ".", "?")  # what follows a word
SENTENCE_ENDS = (2, 3)
CASES = ("lower", "capitalized", "upper", "mixed")
PAD, UNK = 0, 1
WINDOW, CONTEXT = 96, 24  # words a window predicts, and the words either side that it reads besides
_CORE = re.compile(r"^[^\w']*(.*?)([^\w']*)$")


def _case(core: str) -> int:
    letters = [c for c in core if c.isalpha()]
    if not letters or all(c.islower() for c in letters):
        return 0
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return 1
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return 2
    return 3


def _punct(trail: str) -> int:
    if "?" in trail:
        return 3
    if any(c in trail for c in ".!;"):
        return 2
    if any(c in trail for c in ",:-"):
        return 1
    return 0


def labelled_words(text: str) -> list[tuple[str, int, int, str]]:
    """Written text -> its words as the recognizer writes them, each with the punctuation after it, its
    casing and its written form: [(word, punct, case, form)]. "Mr. O'Brien, hi!" -> [("mr", 2, 1, "Mr"),
    ("o'brien", 1, 3, "O'Brien"), ("hi", 2, 0, "hi")]. A token read as several words (numbers, "e-mail")
    takes its casing on its first word and its punctuation on its last; a token of punctuation alone
    ("--") gives its punctuation to the word before it."""
    out: list[tuple[str, int, int, str]] = []
    for tok in text.split():
        core, trail = _CORE.match(tok).groups()
        words = normalize(tok).split()  # the whole token: "#2" is "number two", "p.m." is "pm"
        p = _punct(trail if words else tok)
        if not words:
            if out and p and not out[-1][1]:
                out[-1] = (out[-1][0], p, *out[-1][2:])
            continue
        case = _case(core)
        for i, w in enumerate(words):
            if len(words) == 1:
                c = case
            else:  # "e-mail", "U.S.A."-like runs and numbers: upper throughout, or the first word capitalized
                c = 2 if case == 2 else (1 if case and i == 0 else 0)
            out.append((w, p if i == len(words) - 1 else 0, c, core if c == 3 else w))
    return out


def written(word: str, punct: int, case: int, mixed: dict[str, str]) -> str:
    """A recognizer's word as written: its casing, then its punctuation."""
    if case == 3:
        word = mixed.get(word, word[:1].upper() + word[1:])
    elif case == 2:
        word = word.upper()
    elif case == 1:
        word = word[:1].upper() + word[1:]
    return word + PUNCT[punct]


def scores(pred_p: np.ndarray, gold_p: np.ndarray, pred_c: np.ndarray, gold_c: np.ndarray) -> dict:
    """Per punctuation mark precision / recall / F1, and casing: accuracy, and F1 of 'not lower-case'."""
    out: dict = {"words": int(len(gold_p))}
    for k in range(1, len(PUNCT)):
        tp = int(((pred_p == k) & (gold_p == k)).sum())
        p, g = int((pred_p == k).sum()), int((gold_p == k).sum())
        prec, rec = tp / max(p, 1), tp / max(g, 1)
        out[PUNCT[k]] = {"precision": round(prec, 4), "recall": round(rec, 4),
                         "f1": round(2 * prec * rec / max(prec + rec, 1e-9), 4), "gold": g}
    up_p, up_g = pred_c > 0, gold_c > 0
    tp = int((up_p & up_g).sum())
    prec, rec = tp / max(int(up_p.sum()), 1), tp / max(int(up_g.sum()), 1)
    out["case_accuracy"] = round(float((pred_c == gold_c).mean()), 4)
    out["capitals_f1"] = round(2 * prec * rec / max(prec + rec, 1e-9), 4)
    return out


def with_sentence_starts(punct: np.ndarray, case: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The casing with every sentence's first word capitalized: the text's first, and each after a full stop or a
    question mark the punctuation head placed (whatever the casing head said there)."""
    case = case.copy()
    if len(case):
        starts = np.concatenate([[True], np.isin(punct[:-1], SENTENCE_ENDS)])
        case[starts] = np.maximum(case[starts], 1)
    return punct, case


def labels_from(punct: np.ndarray, case: np.ndarray, bias: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Logits (T, 4) each -> (punct, case) class ids: the most likely of each (with `bias` added to the punctuation
    logits, one a mark: docs/experiments/punct_bias.py), then every sentence's first word capitalized."""
    return with_sentence_starts((punct if bias is None else punct + bias).argmax(-1), case.argmax(-1))


class Punctuator:
    """A punctuation-and-casing model folder: model.onnx (ids (1, T) int64 -> punct (1, T, 4), case
    (1, T, 4) logits), vocab.txt (one word a line; line i is id i + 2), mixed.json (word -> its mixed
    form), punct.json (what it was trained on, and its measured scores)."""

    def __init__(self, path: str | Path, threads: int = 1):
        import onnxruntime as ort

        path = Path(path)
        if not (path / "model.onnx").exists():
            raise ValueError(f"{path}: not a punctuation model folder (no model.onnx)")
        self.path = path
        words = (path / "vocab.txt").read_text(encoding="utf-8").split("\n")
        self.ids = {w: i + 2 for i, w in enumerate(words) if w}
        self.mixed: dict[str, str] = json.loads((path / "mixed.json").read_text(encoding="utf-8"))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path / "model.onnx"), so, providers=["CPUExecutionProvider"])

    def encode(self, words: list[str]) -> np.ndarray:
        return np.array([self.ids.get(w, UNK) for w in words], dtype=np.int64)

    def logits(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(punct, case) logits per word, (T, 4) each: each window of WINDOW words read with CONTEXT words either
        side."""
        ids = self.encode(words)
        punct = np.zeros((len(words), len(PUNCT)), dtype=np.float32)
        case = np.zeros((len(words), len(CASES)), dtype=np.float32)
        for at in range(0, len(words), WINDOW):
            lo, hi = max(0, at - CONTEXT), min(len(words), at + WINDOW + CONTEXT)
            p, c = self.session.run(None, {"ids": ids[None, lo:hi]})
            end = min(len(words), at + WINDOW)
            punct[at:end] = p[0, at - lo:end - lo]
            case[at:end] = c[0, at - lo:end - lo]
        return punct, case

    def labels(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(punct, case) class ids per word."""
        return labels_from(*self.logits(words))

    def write(self, words: list[str]) -> list[str]:
        """Recognizer words (lower case, no punctuation) -> the same words written."""
        punct, case = self.labels(words)
        return [written(w, int(p), int(c), self.mixed) for w, p, c in zip(words, punct, case)]

    def text(self, text: str) -> str:
        return " ".join(self.write(normalize(text).split()))

    def result(self, r):
        """A Result with its words and text written (its words' times and confidences kept, the recognizer's
        words in `spoken`); a result written already is written again from its spoken words."""
        if r.error is not None or not r.words:
            return r
        spoken = r.words if r.spoken is None else r.spoken
        forms = self.write([normalize(w.word) or w.word for w in spoken])
        words = [replace(w, word=f) for w, f in zip(spoken, forms)]
        return replace(r, words=words, text=" ".join(forms), spoken=list(spoken))


def load_punctuator(name: str | Path | None, threads: int = 1) -> Punctuator | None:
    """"default" (the bundled model), a folder, or None / "none" (no punctuation)."""
    if name is None or str(name) == "none":
        return None
    if str(name) == "default" and not (DEFAULT_PUNCT_DIR / "model.onnx").exists():
        raise ValueError(f"the bundled punctuation model is missing ({DEFAULT_PUNCT_DIR}): install asr-engine again, "
                         f"or decode without it ('none')")
    return Punctuator(DEFAULT_PUNCT_DIR if str(name) == "default" else name, threads)
