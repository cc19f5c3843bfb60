"""Tokenizers: characters (default) or SentencePiece BPE. Id 0 is always the CTC blank."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Protocol

from asr_engine.text import normalize

BLANK_ID = 0
BLANK = "<blank>"

__all__ = ["BLANK_ID", "Tokenizer", "CharTokenizer", "BPETokenizer", "train_bpe", "tokenizer_from_config"]


class Tokenizer(Protocol):
    vocab: list[str]

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def starts_word(self, token_id: int) -> bool: ...
    def is_word_separator(self, token_id: int) -> bool: ...
    def to_config(self) -> dict: ...


class CharTokenizer:
    """blank, '|' (word boundary), apostrophe, a-z. Text is normalised before encoding."""

    kind = "char"

    def __init__(self) -> None:
        self.vocab = [BLANK, "|", "'", *string.ascii_lowercase]
        self._ids = {c: i for i, c in enumerate(self.vocab)}
        self._ids[" "] = self._ids.pop("|")

    def encode(self, text: str) -> list[int]:
        return [self._ids[c] for c in normalize(text)]

    def decode(self, ids: list[int]) -> str:
        chars = ("" if i == BLANK_ID else " " if self.vocab[i] == "|" else self.vocab[i] for i in ids)
        return " ".join("".join(chars).split())

    def starts_word(self, token_id: int) -> bool:
        return False  # words are delimited by the separator token

    def is_word_separator(self, token_id: int) -> bool:
        return self.vocab[token_id] == "|"

    def to_config(self) -> dict:
        return {"kind": self.kind}


class BPETokenizer:
    """SentencePiece BPE; vocabulary = [blank] + pieces, so piece p has id p + 1."""

    kind = "bpe"

    def __init__(self, model_path: str | Path):
        import sentencepiece as spm

        self.model_path = Path(model_path)
        self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        self.vocab = [BLANK] + [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self.sp.encode(normalize(text))]

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i - 1 for i in ids if i != BLANK_ID])

    def starts_word(self, token_id: int) -> bool:
        return self.vocab[token_id].startswith("▁")

    def is_word_separator(self, token_id: int) -> bool:
        return self.vocab[token_id] == "▁"

    def to_config(self) -> dict:
        return {"kind": self.kind, "model_file": self.model_path.name}


def train_bpe(sentences: list[str], vocab_size: int, out_prefix: str | Path) -> BPETokenizer:
    """Train a BPE model on normalised sentences; writes <out_prefix>.model."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([normalize(s) for s in sentences]), model_prefix=str(out_prefix),
        vocab_size=vocab_size, model_type="bpe", character_coverage=1.0, bos_id=-1, eos_id=-1,
        unk_id=0, user_defined_symbols=[], minloglevel=2, hard_vocab_limit=False)
    return BPETokenizer(f"{out_prefix}.model")


def tokenizer_from_config(cfg: dict, model_dir: Path) -> Tokenizer:
    unknown = set(cfg) - {"kind", "model_file"}
    if unknown:
        raise ValueError(f"unknown tokenizer config keys: {sorted(unknown)}")
    if cfg.get("kind") == "char":
        return CharTokenizer()
    if cfg.get("kind") == "bpe":
        return BPETokenizer(model_dir / cfg["model_file"])
    raise ValueError(f"unknown tokenizer kind {cfg.get('kind')!r}")
