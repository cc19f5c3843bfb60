"""The torch encoder as the engine's model: numpy in and out at its edges (as the ONNX
runtime, `asr_engine.export.runtime.OnnxModel`), tensors and caches on its device inside.
The skipping path's ops (Triton on CUDA, the torch references elsewhere) are chosen here,
once."""

from __future__ import annotations

import logging

import numpy as np
import torch

from asr_engine.checkpoint import Checkpoint
from asr_engine.kernels import select_ops
from asr_engine.model.config import SkipOptions
from asr_engine.model.fbank import Fbank
from asr_engine.model.graphs import StepGraphs
from asr_engine.model.streaming import StateRows, StreamState

__all__ = ["TorchModel"]

log = logging.getLogger(__name__)


class TorchModel:
    name = "torch"
    chunk_frames = None  # any multiple of the model's chunk
    precision = "fp32"  # as OnnxModel.precision: the torch backend computes in fp32

    def __init__(self, ckpt: Checkpoint, device: str | torch.device = "cpu", graphs: bool = False):
        """graphs: streaming steps through captured CUDA graphs (`StepGraphs`; on a CPU the same parts
        run eagerly, which only tests use)."""
        self.device = torch.device(device)
        self.encoder = ckpt.model.to(self.device).eval()
        self.ops = self.encoder.ops = select_ops(self.device)
        self.graphs = StepGraphs(self.encoder) if graphs else None
        self._fbank = Fbank(ckpt.features).to(self.device)
        self.cfg, self.features, self.tokenizer, self.info = ckpt.model.cfg, ckpt.features, ckpt.tokenizer, ckpt.info
        self.ckpt = ckpt
        self.n_params = sum(p.numel() for p in self.encoder.parameters())

    def fbank(self, waveform: np.ndarray) -> np.ndarray:
        """waveform (B, N) float32 in [-1, 1] -> log-mel (B, T, M)."""
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(waveform, np.float32)).to(self.device)
            return self._fbank(x).cpu().numpy()

    def zeros_state(self, batch: int = 1) -> StreamState:
        return StreamState.zeros(self.cfg, batch, self.device)

    has_hidden = True

    def forward_chunk(self, feats: np.ndarray, n_valid: np.ndarray, state: StreamState,
                      skip: SkipOptions | None, hidden: bool = False):
        """feats (B, input_frames(C + right_context), F), n_valid (B,) valid frames of those C +
        right_context -> log-probs (B, C, V), frames that ran the top layers (B, C), the new state
        (see Encoder.forward_chunk), and with `hidden` the last layer's output (B, C, D), zero on the
        frames that skipped the top layers."""
        with torch.inference_mode():
            graphed = self._graph_step(feats, n_valid, state, skip, hidden)
            if graphed is not None:
                outs, new = graphed
                arrays = host_arrays(*outs)
            else:
                dev = self.device
                out, new = self.encoder.forward_chunk(torch.from_numpy(feats).to(dev),
                                                      torch.from_numpy(n_valid).to(dev), state, skip, hidden)
                arrays = host_arrays(self.ops.log_probs(out.final.raw).float(), out.top_mask,
                                     *[out.top_out.float()] if hidden else [])
            return (arrays[0], arrays[1], new, *arrays[2:])

    def step_rows(self, feats: np.ndarray, n_valid: np.ndarray, rows: StateRows, skip: SkipOptions | None,
                  hidden: bool = False):
        """`forward_chunk` of the streams whose states are `rows` of a StatePool (the engine's), their new
        states written back there -> log-probs, frames that ran the top layers (and the last layer's
        output). Through the graphs a state is copied twice a step (from the pool into the graph's
        inputs, from its outputs back), not four times (a batch of them each way between)."""
        with torch.inference_mode():
            graphed = self._graph_step(feats, n_valid, rows, skip, hidden)
            if graphed is not None:
                return tuple(host_arrays(*graphed[0]))
            log_probs, top, new, *rest = self.forward_chunk(feats, n_valid, rows.gather(), skip, hidden)
            rows.put(new)
            return (log_probs, top, *rest)

    def _graph_step(self, feats: np.ndarray, n_valid: np.ndarray, state: StreamState | StateRows,
                    skip: SkipOptions | None, hidden: bool):
        """`StepGraphs.step` (the parts copy the inputs in themselves), or None without graphs or when
        they fail: a capture this GPU or torch refuses turns them off and the steps go on eagerly."""
        if self.graphs is None:
            return None
        try:
            return self.graphs.step(torch.from_numpy(feats), torch.from_numpy(n_valid), state, skip, hidden)
        except RuntimeError as e:
            log.warning("CUDA graphs off, the encoder's steps run eagerly: %s", e)
            self.graphs = None
            return None

    def encode(self, audios: list[np.ndarray], skip: SkipOptions | None, hidden: bool = False) -> list:
        """Whole 16 kHz utterances as one batch -> per utterance (log-probs (T, V), frames that ran
        the top layers), or None for audio too short for one encoder frame; with `hidden` also the
        top-layer mask (T,) and the last layer's output (T, D), zero where the top layers did not run."""
        from asr_engine.features import num_frames

        live = [i for i, a in enumerate(audios) if num_frames(len(a), self.features) >= self.cfg.receptive_field]
        encoded: list[tuple[np.ndarray, int] | None] = [None] * len(audios)
        if not live:
            return encoded
        samples = [len(audios[i]) for i in live]
        wave = np.zeros((len(live), max(samples)), np.float32)  # one front-end call for the batch: its frames
        for j, i in enumerate(live):  # see their own samples only, so zeros after a row change none of them
            wave[j, : samples[j]] = audios[i]
        host = [num_frames(n, self.features) for n in samples]
        with torch.inference_mode():
            feats = self._fbank(torch.from_numpy(wave).to(self.device))  # (B, T, F)
            lengths = torch.tensor(host, device=self.device)
            past = torch.arange(feats.shape[1], device=self.device)[None, :] >= lengths[:, None]
            x = feats.masked_fill(past[:, :, None], 0.0)  # rows padded with zeros, as one by one they were
            out = self.encoder(x, lengths, skip, hidden=hidden, host_lengths=host)
            log_probs, mask, *top_out = host_arrays(self.ops.log_probs(out.final.raw).float(), out.top_mask,
                                                    *[out.top_out.float()] if hidden else [])
        for j, i in enumerate(live):
            n = self.cfg.output_length(host[j])  # out.lengths, known on the host
            encoded[i] = (log_probs[j, :n], int(mask[j, :n].sum()))
            if hidden:
                encoded[i] += (mask[j, :n], top_out[0][j, :n])
        return encoded


def host_arrays(*tensors: torch.Tensor) -> list[np.ndarray]:
    """Device tensors -> numpy arrays, in one device-to-host copy: on a GPU each copy waits for the
    device, so a step's outputs travel as one byte buffer (widest elements first, so every part
    stays aligned) and are split on the host."""
    if not tensors:
        return []
    order = sorted(range(len(tensors)), key=lambda i: -tensors[i].element_size())
    flat = [tensors[i].contiguous().view(-1).view(torch.uint8) for i in order]
    data = torch.cat(flat).cpu().numpy()
    out: list[np.ndarray] = [np.empty(0)] * len(tensors)
    at = 0
    for i, part in zip(order, flat):
        t = tensors[i]
        dtype = torch.empty(0, dtype=t.dtype).numpy().dtype
        out[i] = data[at: at + part.numel()].view(dtype).reshape(tuple(t.shape))
        at += part.numel()
    return out
