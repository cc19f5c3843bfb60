"""Training above frozen layers from their cached outputs: the cached path computes what the model
computes, and training it moves only what is not frozen."""

import json

import numpy as np
import pytest
import torch

from asr_engine.checkpoint import load_checkpoint, save_checkpoint
from asr_engine.data.loader import FeatureSet, collate
from asr_engine.frozen_cache import CacheMask, FrozenCache, mask_cached
from asr_engine.model.config import SkipOptions
from asr_engine.train import TrainConfig, train

from conftest import tiny_model
from test_train import _manifest


def _features(n: int = 5, seed: int = 0) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    lengths = [37, 80, 61, 23, 80][:n]
    return FeatureSet([torch.randn(t, 80, generator=g).half() for t in lengths], [[1, 2]] * n, ["ab"] * n)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("right", [0, 3])
def test_the_cached_path_equals_the_model_with_and_without_skipping(tmp_path, k, right):
    model = tiny_model("whisper", right_context=right)  # skip layer 2 of 4, heads after 1 and 2
    fs = _features()
    cache = FrozenCache.open(tmp_path / "c", model, fs, k, seed=3, source="tiny", bf16=False, max_frames=170)
    assert sorted(cache.arrays) == sorted({1, 2, k})
    idx = [4, 0, 2]
    x, xl, _, _ = collate(fs, idx)
    offsets = cache.offsets[idx]
    assert offsets.max() > 0  # a drawn position per utterance (position_period 50)
    with torch.no_grad():
        full = model(x, xl, pos_offset=offsets)
        p = full.intermediate[2].blank_prob()[full.top_mask].sort().values
        q = p[len(p) // 4: 3 * len(p) // 4]  # a threshold in the widest gap of the middle half: the cache's
        i = int((q[1:] - q[:-1]).argmax())  # float16 rounding cannot move a frame across it
        for skip in (None, SkipOptions(float(q[i] + q[i + 1]) / 2, 1)):
            want = model(x, xl, skip, teacher=skip is not None, pos_offset=offsets)
            got = cache.forward(model, idx, skip, teacher=skip is not None)
            assert torch.equal(got.lengths, want.lengths) and torch.equal(got.top_mask, want.top_mask)
            valid = want.top_mask if skip is None else torch.ones_like(want.top_mask)
            torch.testing.assert_close(got.final.raw[valid], want.final.raw[valid], atol=2e-2, rtol=0)
            for i in (1, 2):
                torch.testing.assert_close(got.intermediate[i].raw, want.intermediate[i].raw, atol=2e-2, rtol=0)
            if skip is not None:
                assert 0 < int(want.top_mask.sum()) < int(want.lengths.sum())  # some frames skip
                torch.testing.assert_close(got.unskipped.raw, want.unskipped.raw, atol=2e-2, rtol=0)
    # opened again for the same layout and corpus: read back, not rebuilt
    stamp = (tmp_path / "c" / f"layer{k}.npy").stat().st_mtime_ns
    again = FrozenCache.open(tmp_path / "c", model, fs, k, seed=3, source="tiny", bf16=False)
    assert (tmp_path / "c" / f"layer{k}.npy").stat().st_mtime_ns == stamp and again.starts == cache.starts
    # the same frozen weights from another checkpoint (a heads-only stage's successor): read back too
    with torch.no_grad():
        model.final_head.out.weight.add_(1.0)
    again = FrozenCache.open(tmp_path / "c", model, fs, k, seed=3, source="tiny-heads", bf16=False)
    assert (tmp_path / "c" / f"layer{k}.npy").stat().st_mtime_ns == stamp
    rows = np.array(again.arrays[k])
    # other weights below layer k under the same source name: rebuilt, never stale rows
    with torch.no_grad():
        model.layers[0].ff.net[0].weight.mul_(1.5)
    changed = FrozenCache.open(tmp_path / "c", model, fs, k, seed=3, source="tiny", bf16=False)
    assert (tmp_path / "c" / f"layer{k}.npy").stat().st_mtime_ns != stamp
    assert not np.array_equal(np.asarray(changed.arrays[k]), rows)
    # a cache written before digests were recorded: kept for its source, and the digest is added
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    (tmp_path / "c" / "meta.json").write_text(json.dumps({n: v for n, v in meta.items() if n != "weights"}))
    stamp = (tmp_path / "c" / f"layer{k}.npy").stat().st_mtime_ns
    FrozenCache.open(tmp_path / "c", model, fs, k, seed=3, source="tiny", bf16=False)
    assert (tmp_path / "c" / f"layer{k}.npy").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["weights"] == meta["weights"]
    # another corpus or layer: rebuilt
    other = FrozenCache.open(tmp_path / "c", model, _features(4), k, seed=3, source="tiny", bf16=False)
    assert len(other.lengths) == 4
    with pytest.raises(ValueError, match="frozen_layers"):
        FrozenCache.open(tmp_path / "d", model, fs, 4, seed=3, source="tiny")


def test_training_from_the_cache_moves_only_what_is_above_the_frozen_layers(tmp_path):
    from asr_engine.pretrained import import_whisper

    from test_pretrained import tiny_whisper, write_ct2

    manifest = _manifest(tmp_path)
    init = import_whisper([write_ct2(tmp_path / "model.bin", tiny_whisper())], chunk_size=4, left_chunks=2,
                          feat_floor=-6.0)
    save_checkpoint(init, tmp_path / "init")
    n_layers, skip_layer = init.model.cfg.n_layers, init.model.cfg.skip_layer
    k = n_layers - 1
    base = dict(train_manifest=str(manifest), init_from=str(tmp_path / "init"), max_frames=400, bf16=False,
                warmup_steps=1, skip_train_start=1, skip_train_prob=1.0, skip_train_threshold=0.5,
                frozen_layers=k, model={"right_context": 2, "head_hidden": 16}, out_dir=str(tmp_path / "run"))
    train(TrainConfig(steps=3, **base), progress=False)
    before = init.model.state_dict()
    after = load_checkpoint(tmp_path / "run" / "last").model.state_dict()
    for name, value in after.items():
        if name.startswith("subsampling.") or any(name.startswith(f"layers.{i}.") for i in range(k)):
            assert torch.equal(value, before[name]), name  # frozen: the stem and layers 1..k
    top = [n for n in after if n.startswith(f"layers.{k}.") and n in before]
    assert top and any(not torch.equal(after[n], before[n]) for n in top)  # the layer above learns
    for head in ("final_head", f"heads.{skip_layer}"):
        assert after[f"{head}.mlp.2.weight"].any()  # the head MLPs learn (they start at zero)
    meta = json.loads((tmp_path / "run" / "frozen_cache" / "meta.json").read_text())
    assert meta["k"] == k and meta["utterances"] == 4 and meta["right_context"] == 2
    train(TrainConfig(steps=4, **base), resume=True, progress=False)  # resumes on the same cache
    assert load_checkpoint(tmp_path / "run" / "last").info["step"] == 4
    # SpecAugment's place on the cache: the same steps from the same weights learn something else
    masked = {**base, "out_dir": str(tmp_path / "m"), "cache_dir": str(tmp_path / "run" / "frozen_cache")}
    train(TrainConfig(steps=3, cache_mask={"n_time": 2, "time_frac": 0.3, "channel_frac": 0.2}, **masked),
          progress=False)
    train(TrainConfig(steps=3, **{**masked, "out_dir": str(tmp_path / "p")}), progress=False)
    plain = load_checkpoint(tmp_path / "p" / "last").model.state_dict()
    with_mask = load_checkpoint(tmp_path / "m" / "last").model.state_dict()
    assert not torch.equal(with_mask["final_head.out.weight"], plain["final_head.out.weight"])
    with pytest.raises(ValueError, match="needs frozen_layers"):
        train(TrainConfig(steps=1, **{**base, "frozen_layers": 0, "out_dir": str(tmp_path / "n")},
                          cache_mask={"n_time": 2}), progress=False)
    with pytest.raises(ValueError, match="n_time, time_frac"):
        train(TrainConfig(steps=1, **{**masked, "out_dir": str(tmp_path / "n")}, cache_mask={"width": 2}),
              progress=False)
    with pytest.raises(ValueError, match="loss.feature"):
        train(TrainConfig(steps=1, **{**base, "out_dir": str(tmp_path / "f")}, loss={"feature": 0.5}),
              progress=False)


def test_cache_masks_cover_a_frame_and_its_lookahead_copies_in_every_layer(tmp_path):
    model = tiny_model("whisper", right_context=3)
    fs = _features()
    cache = FrozenCache.open(tmp_path / "c", model, fs, 3, seed=3, source="tiny", bf16=False, max_frames=170)
    idx = [4, 0, 2, 3]
    xs, frames, lengths = cache.batch(model, idx)
    gen = torch.Generator().manual_seed(0)
    got = mask_cached(xs, frames, lengths, CacheMask(n_time=3, time_frac=0.2), gen)
    masked = {}
    for layer, x in xs.items():
        fill = x[frames.valid].mean(0)
        hit = (got[layer] != x).any(-1)  # rows changed in this layer
        assert torch.allclose(got[layer][hit], fill.expand(int(hit.sum()), -1))
        masked[layer] = hit
    first = masked[min(masked)]
    assert all(torch.equal(m, first) for m in masked.values())  # every layer loses the same rows
    for b, n in enumerate(lengths.tolist()):
        hit_pos = set(frames.pos[b][first[b]].tolist())
        assert 0 < len(hit_pos) <= 3 * int(0.2 * n) + 3 and max(hit_pos) < n
        # a frame's lookahead copies are masked with it, and only masked frames' copies are
        copies = frames.valid[b] & (torch.arange(frames.pos.shape[1]) >= frames.n_real)
        for r in torch.nonzero(copies).flatten().tolist():
            assert bool(first[b, r]) == (int(frames.pos[b, r]) in hit_pos)
    # the same generator state draws the same masks; channels: a share of each utterance's channels, every row
    again = mask_cached(xs, frames, lengths, CacheMask(n_time=3, time_frac=0.2), torch.Generator().manual_seed(0))
    assert all(torch.equal(again[i], got[i]) for i in xs)
    chan = mask_cached(xs, frames, lengths, CacheMask(n_time=0, channel_frac=0.5), gen)[3]
    for b in range(len(idx)):
        lost = (chan[b] != xs[3][b])[frames.valid[b]].any(0)  # (D,) channels changed in any row
        assert 0 < int(lost.sum()) < lost.numel()
        assert torch.equal((chan[b] != xs[3][b])[frames.valid[b]], lost.expand(int(frames.valid[b].sum()), -1))
    with pytest.raises(ValueError, match="channel_frac"):
        CacheMask(channel_frac=1.5)
