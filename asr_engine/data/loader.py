"""Feature loading, duration-bucketed batching and SpecAugment for training."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from asr_engine.audio import AudioError, load_audio
from asr_engine.features import Fbank
from asr_engine.manifest import Utterance, corpus_name, read_corpus
from asr_engine.tokenizer import Tokenizer


@dataclass
class FeatureSet:
    """Utterances as (T, F) float16 feature tensors with their token ids."""

    feats: list[torch.Tensor]
    tokens: list[list[int]]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.feats)


def load_features(corpus: str | Path | list[Utterance], tokenizer: Tokenizer, fbank: Fbank,
                  max_duration: float = 20.0, progress: bool = False) -> FeatureSet:
    """Features of every utterance of a corpus (a manifest, a LibriSpeech folder, or utterances
    already read); skips unreadable or too long ones."""
    rows = corpus if isinstance(corpus, list) else read_corpus(corpus)
    utts = [u for u in rows if u.duration <= max_duration]
    it = utts
    if progress:
        from tqdm import tqdm
        name = "train" if isinstance(corpus, list) else corpus_name(corpus)
        it = tqdm(utts, desc=f"features {name}", unit="utt")
    feats, tokens, texts = [], [], []
    for u in it:
        try:
            audio = load_audio(u.audio)
        except AudioError:
            continue
        ids = tokenizer.encode(u.text)
        with torch.no_grad():
            f = fbank(torch.from_numpy(audio)[None])[0]
        if not ids or f.shape[0] < 4 * (len(ids) + 2):  # CTC needs a frame per token at least
            continue
        feats.append(f.half())
        tokens.append(ids)
        texts.append(u.text)
    return FeatureSet(feats, tokens, texts)


def bucket_batches(lengths: list[int], max_frames: int, seed: int, shuffle: bool = True) -> list[list[int]]:
    """Group utterances of similar length so that each batch has <= max_frames padded frames."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, cur, cur_max = [], [], 0
    for i in order:
        m = max(cur_max, lengths[i])
        if cur and m * (len(cur) + 1) > max_frames:
            batches.append(cur)
            cur, m = [], lengths[i]
        cur.append(i)
        cur_max = m
    if cur:
        batches.append(cur)
    if shuffle:
        random.Random(seed).shuffle(batches)
    return batches


def spec_augment(x: torch.Tensor, lengths: torch.Tensor, fill: torch.Tensor, gen: torch.Generator,
                 n_freq: int = 2, freq_width: int = 15, n_time: int = 4, time_frac: float = 0.05) -> torch.Tensor:
    """Mask random frequency bands and time spans of (B, T, F) features with `fill` (F,), the feature mean."""
    x = x.clone()
    B, T, F = x.shape
    for b in range(B):
        for _ in range(n_freq):
            w = int(torch.randint(0, freq_width + 1, (1,), generator=gen))
            f0 = int(torch.randint(0, max(1, F - w), (1,), generator=gen))
            x[b, :, f0:f0 + w] = fill[f0:f0 + w]
        max_w = max(1, int(time_frac * int(lengths[b])))
        for _ in range(n_time):
            w = int(torch.randint(0, max_w + 1, (1,), generator=gen))
            t0 = int(torch.randint(0, max(1, int(lengths[b]) - w), (1,), generator=gen))
            x[b, t0:t0 + w] = fill
    return x


def collate(fs: FeatureSet, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> feats (B, T, F) float32, feat_lengths (B,), targets (B, S), target_lengths (B,)."""
    feats = [fs.feats[i].float() for i in idx]
    toks = [torch.tensor(fs.tokens[i]) for i in idx]
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    y = torch.nn.utils.rnn.pad_sequence(toks, batch_first=True)
    return x, torch.tensor([f.shape[0] for f in feats]), y, torch.tensor([len(t) for t in toks])
