"""Does the compacted pass lose less when blocks 5-6's conv modules see the timeline, not the compacted order?

On a compacted sequence the causal depthwise conv (15 taps) reads the previous 14 *kept* frames, which may lie far
back in time. Here, in the compacted pass only, each kept frame's taps read the kept frames at its own timeline
offsets (t-14..t), with zeros where a frame was skipped, as the whole pass's conv would see them with the skipped
frames' inputs set to zero. Lookahead copies keep their taps as they are. Nothing is trained; the whole pass is
unchanged.

    python docs/experiments/conv_timeline.py MODEL MANIFEST[+MANIFEST...] 0.99,0.95,0.9 [EVERY]
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from asr_engine.model.layers import ConvModule
from skip_probe import plain_args, probe

STATE = {"on": False}
_plain = ConvModule.forward


def _forward(self, x, plan):
    if not STATE["on"]:
        return _plain(self, x, plan)
    y = F.glu(self.pw1(self.norm_in(x)), dim=-1)  # (B, N, D)
    n = plan.frames.n_real
    pos, valid = plan.frames.pos[:, :n], plan.frames.valid[:, :n]
    B, _, D = y.shape
    span = int(pos[valid].max()) + 1 if bool(valid.any()) else 1
    line = y.new_zeros(B, span, D)  # the timeline, zero where a frame was skipped
    at = torch.where(valid, pos, span - 1).clamp(max=span - 1)
    line.scatter_(1, at[:, :, None].expand(-1, -1, D), torch.where(valid[:, :, None], y[:, :n], 0.0))
    conv = self.dw(F.pad(line.transpose(1, 2), (self.left_pad, 0))).transpose(1, 2)  # (B, span, D)
    out = conv.gather(1, at[:, :, None].expand(-1, -1, D))
    if plan.conv_index is not None:
        out = torch.cat([out, self._taps(torch.cat([y.new_zeros(B, self.left_pad, D), y], 1), plan.conv_index)], 1)
    return self.drop(self.pw2(F.silu(self.norm(out))))


def main() -> None:
    ConvModule.forward = _forward
    model, utts, thresholds = plain_args(sys.argv)
    probe(model, utts, thresholds, [False, True], lambda on: STATE.update(on=on), "conv on the timeline")


if __name__ == "__main__":
    main()
