"""Feature loading, duration-bucketed batching and SpecAugment for training."""

from __future__ import annotations

import queue
import random
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from asr_engine.audio import AudioError, load_audio
from asr_engine.model.fbank import Fbank
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
    already read), computed on fbank's device and kept in host memory; skips unreadable or too long ones."""
    rows = corpus if isinstance(corpus, list) else read_corpus(corpus)
    utts = [u for u in rows if u.duration <= max_duration]
    it = utts
    if progress:
        from tqdm import tqdm
        name = "train" if isinstance(corpus, list) else corpus_name(corpus)
        it = tqdm(utts, desc=f"features {name}", unit="utt")
    feats, tokens, texts = [], [], []
    device = next(iter(fbank.buffers()), torch.empty(0)).device
    for u in it:
        try:
            audio = load_audio(u.audio)
        except AudioError:
            continue
        ids = tokenizer.encode(u.text)
        with torch.no_grad():
            f = fbank(torch.from_numpy(audio).to(device)[None])[0].cpu()
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


def time_spans(lengths: torch.Tensor, n_time: int, time_frac: float,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """SpecAugment's time masks for utterances of `lengths` (B,) frames on the CPU: starts and widths (B, n_time),
    each width up to time_frac of its utterance (at least 1 frame)."""
    max_w = (time_frac * lengths.float()).long().clamp(min=1)[:, None]  # (B, 1)
    tw = (torch.rand(len(lengths), n_time, generator=gen) * (max_w + 1)).long()
    t0 = (torch.rand(len(lengths), n_time, generator=gen) * (lengths[:, None] - tw).clamp(min=1)).long()
    return t0, tw


def spec_augment(x: torch.Tensor, lengths: torch.Tensor, fill: torch.Tensor, gen: torch.Generator,
                 n_freq: int = 2, freq_width: int = 15, n_time: int = 4, time_frac: float = 0.05) -> torch.Tensor:
    """Mask random frequency bands and time spans of (B, T, F) features with `fill` (F,), the feature mean.
    The spans are drawn on the CPU (`gen`, lengths (B,) on the CPU) and applied as one masked select on
    x's device: no per-utterance indexing, so no small launches or host syncs on a GPU."""
    B, T, F = x.shape
    lengths = lengths.cpu()
    fw = torch.randint(0, freq_width + 1, (B, n_freq), generator=gen)
    f0 = (torch.rand(B, n_freq, generator=gen) * (F - fw).clamp(min=1)).long()
    t0, tw = time_spans(lengths, n_time, time_frac, gen)
    f, t = torch.arange(F), torch.arange(T)
    fmask = ((f >= f0[..., None]) & (f < (f0 + fw)[..., None])).any(1)  # (B, F)
    tmask = ((t >= t0[..., None]) & (t < (t0 + tw)[..., None])).any(1)  # (B, T)
    mask = (fmask[:, None, :] | tmask[:, :, None]).to(x.device, non_blocking=True)
    return torch.where(mask, fill.to(x.device, x.dtype), x)


def collate(fs: FeatureSet, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> feats (B, T, F) float32, feat_lengths (B,), targets (B, S), target_lengths (B,)."""
    feats = [fs.feats[i].float() for i in idx]
    toks = [torch.tensor(fs.tokens[i]) for i in idx]
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    y = torch.nn.utils.rnn.pad_sequence(toks, batch_first=True)
    return x, torch.tensor([f.shape[0] for f in feats]), y, torch.tensor([len(t) for t in toks])


class Prefetcher:
    """Collates the next batches in a background thread while the current one trains (pinned host
    memory when the model is on a GPU, so the copies can overlap the compute); iterate for
    (idx, feats, feat_lengths, targets, target_lengths) in batch order."""

    def __init__(self, fs: FeatureSet, batches: list[list[int]], pin: bool = False, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()

        def work() -> None:
            try:
                for idx in batches:
                    if self._stop.is_set():
                        return
                    tensors = collate(fs, idx)
                    if pin:
                        tensors = tuple(t.pin_memory() for t in tensors)
                    self._put((idx, *tensors))
            except BaseException as e:  # surfaces in the consumer, not lost in the thread
                self._put(e)
            self._put(None)

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop early (the consumer left before the last batch)."""
        self._stop.set()
        self._thread.join(timeout=5)
