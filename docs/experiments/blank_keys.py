"""Does skipping cost less when the top layers' attention still counts the skipped frames?

A skipping pass removes the gate's blank frames from blocks 4-6 (docs/whisper-import.md, "Where skipping's cost comes
from": nearly all of the cost is this lost context). Here each top layer's attention gets one extra key per query
that stands for the skipped frames of its window: the mean key and value of blank frames at that layer (measured
on training speech, in full passes), with log(number of skipped frames in the query's window) added to its score,
which is what attention over that many identical frames would give. Nothing is trained; the full pass is unchanged.

    python docs/experiments/blank_keys.py MODEL CALIB_MANIFEST N_CALIB MANIFEST[+MANIFEST...] 0.99,0.95,0.9 [EVERY]
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from asr_engine.backend import load_model
from asr_engine.model.layers import ChunkedAttention
from skip_probe import batches, probe, read_manifests

STATE = {"on": False, "lengths": None}  # the virtual key is used while "on"; lengths: (B,) real frames per row
_plain_attend = ChunkedAttention._attend_block


def _attend(self, q, k, v, cq, ck, ak, pq, pk, vq, vk):
    if not (STATE["on"] and getattr(self, "blank_kv", None) is not None):
        return _plain_attend(self, q, k, v, cq, ck, ak, pq, pk, vq, vk)
    allowed = ck[:, None, :] <= cq[:, :, None]
    allowed = allowed & (ck[:, None, :] >= cq[:, :, None] - self.left)
    allowed = ((ak & (ck[:, None, :] == cq[:, :, None])) | (~ak & allowed)) & vk[:, None, :]
    kept = (allowed & ~ak[None, None, :]).sum(-1)  # (B, Q) real keys the query sees
    L = STATE["lengths"][:, None]  # (B, 1)
    lo = ((cq - self.left).clamp(min=0) * self.chunk).clamp(max=L)
    hi = ((cq + 1) * self.chunk).clamp(max=L)
    n_skip = (hi - lo - kept).clamp(min=0).to(q.dtype)  # (B, Q) real frames of its window that were skipped
    allowed = allowed | ~vq[:, :, None]
    bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
    extra = torch.where((n_skip > 0) & vq, n_skip.clamp(min=1).log(), torch.full_like(n_skip, float("-inf")))
    bias = torch.cat([bias, extra[:, :, None]], 2)
    kb, vb = self.blank_kv  # (H, E) each
    B = q.shape[0]
    k = torch.cat([k, kb[None, :, None, :].expand(B, -1, 1, -1)], 2)
    v = torch.cat([v, vb[None, :, None, :].expand(B, -1, 1, -1)], 2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None])


ChunkedAttention._attend_block = _attend


def calibrate(model, utts, threshold: float) -> None:
    """Each top layer's mean key and value over real frames whose gate P(blank) > threshold, in full passes."""
    enc = model.encoder
    top = enc.layers[enc.cfg.skip_layer:]
    sums = [[0.0, 0.0] for _ in top]
    count = 0
    grabbed = {}
    hooks = [layer.att.qkv.register_forward_hook(lambda m, i, o, j=j: grabbed.__setitem__(j, o))
             for j, layer in enumerate(top)]
    with torch.inference_mode():
        for _, _, x, lengths in batches(model, utts):
            out = enc(x, lengths, None)
            T = out.final.raw.shape[1]
            valid = torch.arange(T)[None, :] < out.lengths[:, None]
            blank = (out.intermediate[enc.cfg.skip_layer].blank_prob() > threshold) & valid  # (B, T)
            count += int(blank.sum())
            for j in range(len(top)):
                q, k, v = grabbed[j][:, :T].unflatten(-1, (3, enc.cfg.n_heads, -1)).unbind(2)  # (B, T, H, E)
                sums[j][0] = sums[j][0] + k[blank].sum(0)
                sums[j][1] = sums[j][1] + v[blank].sum(0)
    for h in hooks:
        h.remove()
    for j, layer in enumerate(top):
        layer.att.blank_kv = (sums[j][0] / count, sums[j][1] / count)
    print(f"calibrated on {len(utts)} utterances, {count} blank frames", file=sys.stderr)


def main() -> None:
    model = load_model(sys.argv[1], backend="torch", threads=2)
    enc = model.encoder
    thresholds = [float(t) for t in sys.argv[5].split(",")]
    calibrate(model, read_manifests(sys.argv[2])[: int(sys.argv[3])], min(thresholds))
    every = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    utts = read_manifests(sys.argv[4])[::every]

    def lengths_of(feat_lengths):
        STATE["lengths"] = enc.subsampling.output_lengths(feat_lengths)

    probe(model, utts, thresholds, [False, True], lambda on: STATE.__setitem__("on", on),
          "skipped frames as one key", lambda on: "yes" if on else "-", lengths_of)

if __name__ == "__main__":
    main()
