"""Does skipping cost less when some blank frames always stay in the top layers' sequence?

docs/whisper-import.md ("Where skipping's cost comes from") found that nearly all of skipping's WER
cost is the top layers' lost context, not the gate's misses. The top layers are Whisper's blocks,
never trained to read a sequence with its pauses cut out. This probe keeps every k-th frame of the
timeline in the top layers' sequence whatever the gate says (so a long pause still leaves a few
frames there, as Whisper's attention has always had), and measures greedy WER and the share of
frames skipped against the plain gate, at several thresholds, with no training:

    python docs/experiments/sink_frames.py MODEL MANIFEST[+MANIFEST...] 0.99,0.95,0.9 2,4,8 [EVERY]

The rule is a monkeypatch of the reference keep mask (the torch path of a whole-utterance pass,
which is equal to streaming frame for frame); nothing in the engine changes.
"""

from __future__ import annotations

import sys

import torch

import asr_engine.kernels.compaction as compaction
import asr_engine.model.encoder as encoder
from asr_engine.backend import load_model
from skip_probe import probe, read_manifests

_plain = compaction.keep_mask
STRIDE = [0]  # 0: the plain gate; k: every k-th frame (of the real frames, and of each chunk's copies) kept


def keep_mask(blank_prob, valid, threshold, dilation, chunk=None):
    keep = _plain(blank_prob, valid, threshold, dilation, chunk)
    if STRIDE[0] and threshold < 1.0:
        keep = keep | ((torch.arange(keep.shape[1], device=keep.device) % STRIDE[0] == 0)[None, :] & valid)
    return keep


compaction.keep_mask = encoder.keep_mask = keep_mask


def main() -> None:
    model = load_model(sys.argv[1], backend="torch", threads=2)
    thresholds = [float(t) for t in sys.argv[3].split(",")]
    strides = [0] + [int(k) for k in sys.argv[4].split(",")]
    every = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    utts = read_manifests(sys.argv[2])[::every]
    probe(model, utts, thresholds, strides, lambda k: STRIDE.__setitem__(0, k), "every k-th frame kept",
          lambda k: k or "-")


if __name__ == "__main__":
    main()
