import json
from pathlib import Path

import pytest
import soundfile as sf
import torch

from asr_engine.checkpoint import load_checkpoint
from asr_engine.model.config import SkipOptions
from asr_engine.train import TrainConfig, lr_at, resolve_device, train

from conftest import tone


def _manifest(tmp_path):
    rows = []
    for i, (freq, text) in enumerate([(300, "low tone"), (900, "high tone"), (500, "mid"), (700, "upper mid")]):
        sf.write(tmp_path / f"{i}.wav", tone(1.5, freq=freq), 16000)
        rows.append({"audio": f"{i}.wav", "text": text, "duration": 1.5})
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_checkpoints_and_resumes(tmp_path):
    manifest = _manifest(tmp_path)
    base = dict(train_manifest=str(manifest), dev_manifest=str(manifest), out_dir=str(tmp_path / "run"),
                model=dict(d_model=32, n_heads=2, n_layers=2, intermediate_layers=[1], skip_layer=1),
                max_frames=400, warmup_steps=2, skip_train_start=2, eval_every=3, bf16=False)
    train(TrainConfig(steps=3, **base), progress=False)
    ck = load_checkpoint(tmp_path / "run" / "last")
    assert ck.info["step"] == 3 and ck.info["utterances"] == 4
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 3 and 0 <= log[0]["dev"]["wer"]
    train(TrainConfig(steps=5, **base), resume=True, progress=False)
    assert load_checkpoint(tmp_path / "run" / "last").info["step"] == 5


def test_unknown_train_config_keys_are_errors():
    with pytest.raises(ValueError, match="unknown train config keys"):
        TrainConfig.from_dict({"train_manifest": "x", "out_dir": "y", "nope": 1})


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(train_manifest="x", out_dir="y", steps=100, warmup_steps=10, lr=1.0)
    assert lr_at(0, cfg) < lr_at(9, cfg) == 1.0
    assert lr_at(50, cfg) < 1.0 and abs(lr_at(100, cfg) - 0.05) < 1e-9


def _batch_loss(ckpt_dir, manifest):
    import torch

    from asr_engine.data.loader import collate, load_features
    from asr_engine.model.fbank import Fbank
    from asr_engine.losses import LossWeights, total_loss

    ck = load_checkpoint(ckpt_dir)
    fs = load_features(manifest, ck.tokenizer, Fbank())
    x, xl, y, yl = collate(fs, list(range(len(fs))))
    with torch.no_grad():
        loss, _ = total_loss(ck.model.eval()(x, xl), y, yl, LossWeights())
    return float(loss)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_training_steps_reduce_the_loss_with_bpe_and_skip_aware_steps(tmp_path, device):
    """The same loop on either device: batches, SpecAugment and skip-aware steps go to the device,
    the checkpoint comes back to the host and resumes there."""
    manifest = _manifest(tmp_path)
    base = dict(train_manifest=[str(manifest)], out_dir=str(tmp_path / "run"), device=device,
                model=dict(d_model=32, n_heads=2, n_layers=2, intermediate_layers=[1], skip_layer=1, dropout=0.0),
                tokenizer={"kind": "bpe", "vocab_size": 20}, max_frames=2000, lr=3e-3, warmup_steps=5,
                skip_train_start=10, skip_train_prob=0.5, skip_train_threshold=0.5, bf16=device == "cuda",
                loss={"skip_distill": 1.0})
    train(TrainConfig(steps=0, **base), progress=False)
    before = _batch_loss(tmp_path / "run" / "last", manifest)
    train(TrainConfig(steps=40, **base), resume=True, progress=False)
    after = _batch_loss(tmp_path / "run" / "last", manifest)
    assert after < 0.7 * before
    ck = load_checkpoint(tmp_path / "run" / "last")
    assert ck.tokenizer.kind == "bpe" and ck.model.cfg.vocab_size == len(ck.tokenizer.vocab)
    assert ck.model.feat_mean.device.type == "cpu"
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["steps"] == 40 and report["train_seconds"] > 0


def test_init_from_fine_tunes_a_checkpoint_on_new_data(tmp_path):
    manifest = _manifest(tmp_path)
    model = dict(d_model=32, n_heads=2, n_layers=2, intermediate_layers=[1], skip_layer=1)
    train(TrainConfig(train_manifest=str(manifest), out_dir=str(tmp_path / "a"), model=model, steps=2,
                      max_frames=400, bf16=False), progress=False)
    train(TrainConfig(train_manifest=str(manifest), out_dir=str(tmp_path / "b"), steps=2, max_frames=400,
                      init_from=str(tmp_path / "a" / "last"), bf16=False), progress=False)
    ck = load_checkpoint(tmp_path / "b" / "last")
    assert ck.info["init_from"].endswith("last") and ck.model.cfg.d_model == 32
    # the streaming layout may change (a smaller chunk for lower latency); the weights carry over
    train(TrainConfig(train_manifest=str(manifest), out_dir=str(tmp_path / "d"), steps=1, max_frames=400,
                      init_from=str(tmp_path / "a" / "last"), model=dict(chunk_size=4, left_chunks=8),
                      bf16=False, lr=0.0), progress=False)
    ck_d = load_checkpoint(tmp_path / "d" / "last")
    assert (ck_d.model.cfg.chunk_size, ck_d.model.cfg.left_chunks) == (4, 8)
    w_a = load_checkpoint(tmp_path / "a" / "last").model.state_dict()
    assert all(torch.equal(w_a[k], v) for k, v in ck_d.model.state_dict().items())
    with pytest.raises(ValueError, match="must match"):
        train(TrainConfig(train_manifest=str(manifest), out_dir=str(tmp_path / "c"), steps=1, max_frames=400,
                          init_from=str(tmp_path / "a" / "last"), model=dict(d_model=64)), progress=False)


def test_a_head_mlp_added_to_a_trained_model_starts_from_its_outputs(tmp_path):
    manifest = _manifest(tmp_path)
    model = dict(d_model=32, n_heads=2, n_layers=2, intermediate_layers=[1], skip_layer=1)
    common = dict(train_manifest=str(manifest), max_frames=400, bf16=False)
    train(TrainConfig(out_dir=str(tmp_path / "a"), model=model, steps=2, **common), progress=False)
    train(TrainConfig(out_dir=str(tmp_path / "b"), init_from=str(tmp_path / "a" / "last"), steps=1, lr=0.0,
                      model=dict(head_hidden=48), **common), progress=False)
    a, b = load_checkpoint(tmp_path / "a" / "last").model, load_checkpoint(tmp_path / "b" / "last").model
    assert b.cfg.head_hidden == 48 and a.final_head.mlp is None
    assert b.final_head.mlp[0].weight.shape == (48, 32) and not b.final_head.mlp[2].weight.any()
    x, xl = torch.randn(2, 120, 80), torch.tensor([120, 90])
    with torch.no_grad():
        out_a, out_b = a(x, xl, SkipOptions(0.9, 1)), b(x, xl, SkipOptions(0.9, 1))
    assert torch.equal(out_a.final.raw, out_b.final.raw) and torch.equal(out_a.intermediate[1].raw,
                                                                         out_b.intermediate[1].raw)
    # then it learns: a step at a real learning rate moves the MLP off zero
    train(TrainConfig(out_dir=str(tmp_path / "c"), init_from=str(tmp_path / "b" / "last"), steps=1, lr=1e-3,
                      **common), progress=False)
    assert load_checkpoint(tmp_path / "c" / "last").model.final_head.mlp[2].weight.any()
    with pytest.raises(ValueError, match="head_hidden"):  # a head MLP cannot be taken away
        train(TrainConfig(out_dir=str(tmp_path / "d"), init_from=str(tmp_path / "b" / "last"), steps=1,
                          model=dict(head_hidden=0), **common), progress=False)


def test_retokenize_gives_a_trained_model_new_word_pieces_and_keeps_what_is_below_the_output_layers(tmp_path):
    manifest = _manifest(tmp_path)
    model = dict(d_model=32, n_heads=2, n_layers=2, intermediate_layers=[1], skip_layer=1, head_hidden=16)
    common = dict(train_manifest=str(manifest), max_frames=400, bf16=False)
    train(TrainConfig(out_dir=str(tmp_path / "a"), model=model, tokenizer={"kind": "bpe", "vocab_size": 17},
                      steps=2, **common), progress=False)
    train(TrainConfig(out_dir=str(tmp_path / "b"), init_from=str(tmp_path / "a" / "last"), steps=1, lr=0.0,
                      retokenize={"kind": "bpe", "vocab_size": 24}, **common), progress=False)
    a, b = load_checkpoint(tmp_path / "a" / "last"), load_checkpoint(tmp_path / "b" / "last")
    assert len(a.tokenizer.vocab) == 18 and len(b.tokenizer.vocab) == 25 == b.model.cfg.vocab_size
    assert b.tokenizer.decode(b.tokenizer.encode("upper mid tone")) == "upper mid tone"
    wa, wb = a.model.state_dict(), b.model.state_dict()
    outs = {k for k in wb if k.startswith(("final_head.", "heads.")) and ".out." in k}
    assert outs == {"final_head.out.weight", "final_head.out.bias", "heads.1.out.weight", "heads.1.out.bias"}
    assert all(wb[k].shape[0] == 25 for k in outs)
    assert all(torch.equal(wa[k], v) for k, v in wb.items() if k not in outs)  # the MLPs and layers carry over
    # resuming keeps the new tokenizer (and does not train another)
    train(TrainConfig(out_dir=str(tmp_path / "b"), init_from=str(tmp_path / "a" / "last"), steps=2, lr=1e-3,
                      retokenize={"kind": "bpe", "vocab_size": 24}, **common), resume=True, progress=False)
    c = load_checkpoint(tmp_path / "b" / "last")
    assert c.info["step"] == 2 and c.tokenizer.vocab == b.tokenizer.vocab
    with pytest.raises(ValueError, match="retokenize"):
        train(TrainConfig(out_dir=str(tmp_path / "d"), model=model, steps=1,
                          retokenize={"kind": "bpe", "vocab_size": 24}, **common), progress=False)


def test_layers_grown_on_a_whisper_model_start_as_the_identity_and_learn_as_new(tmp_path):
    from asr_engine.pretrained import pretrained_parameter_names

    manifest = _manifest(tmp_path)
    model = dict(d_model=32, n_heads=2, n_layers=3, intermediate_layers=[1], skip_layer=1, stem="whisper",
                 block="whisper", positions="absolute", subsampling=2, position_period=50, conv_layers=[3])
    common = dict(train_manifest=str(manifest), max_frames=400, bf16=False)
    train(TrainConfig(out_dir=str(tmp_path / "a"), model=model, steps=2, **common), progress=False)
    grow = dict(n_layers=5, conv_layers=[3, 4, 5])
    train(TrainConfig(out_dir=str(tmp_path / "b"), init_from=str(tmp_path / "a" / "last"), steps=1, lr=0.0,
                      model=grow, **common), progress=False)
    a, b = load_checkpoint(tmp_path / "a" / "last").model, load_checkpoint(tmp_path / "b" / "last").model
    assert (b.cfg.n_layers, b.cfg.pretrained_layers, b.cfg.conv_layers) == (5, 3, (3, 4, 5))
    x, xl = torch.randn(2, 120, 80), torch.tensor([120, 90])
    with torch.no_grad():
        for skip in (None, SkipOptions(0.9, 1)):
            assert torch.allclose(a(x, xl, skip).final.raw, b(x, xl, skip).final.raw, atol=1e-5)
    # Whisper's weights are those of layers 1-3 only; the new layers learn even when the imported ones may not
    names = pretrained_parameter_names(b.cfg)
    assert "layers.2.att.qkv.weight" in names and not any(n.startswith(("layers.3.", "layers.4.")) for n in names)
    train(TrainConfig(out_dir=str(tmp_path / "c"), init_from=str(tmp_path / "b" / "last"), steps=2, lr=1e-3,
                      pretrained_lr_scale=0.0, freeze_pretrained_steps=0, **common), progress=False)
    c = load_checkpoint(tmp_path / "c" / "last").model
    assert c.layers[4].ff.net[4].weight.any() and c.layers[3].att.proj.weight.any()
    assert torch.equal(c.layers[2].att.qkv.weight, b.layers[2].att.qkv.weight)
    with pytest.raises(ValueError, match="may only grow"):
        train(TrainConfig(out_dir=str(tmp_path / "d"), init_from=str(tmp_path / "b" / "last"), steps=1,
                          model=dict(n_layers=4), **common), progress=False)
    with pytest.raises(ValueError, match="conv modules to the new layers"):
        train(TrainConfig(out_dir=str(tmp_path / "e"), init_from=str(tmp_path / "a" / "last"), steps=1,
                          model=dict(n_layers=4, conv_layers=[2, 3, 4]), **common), progress=False)


def test_train_cli_runs_a_config_and_reports(tmp_path, capsys):
    from asr_engine.cli import main

    manifest = _manifest(tmp_path)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(dict(train_manifest=str(manifest), dev_manifest=str(manifest),
                                   out_dir=str(tmp_path / "r"),
                                   model=dict(d_model=32, n_heads=2, n_layers=2, intermediate_layers=[1], skip_layer=1),
                                   steps=2, max_frames=400, bf16=False, eval_every=100)))
    assert main(["train", str(cfg), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "steps: 2" in err and "dev WER" in err
    if not torch.cuda.is_available():
        assert main(["train", str(cfg), "--quiet", "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    cfg.write_text("{not json")
    assert main(["train", str(cfg), "--quiet"]) == 2
    assert "not a readable training config" in capsys.readouterr().err


def test_training_device_is_resolved_and_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="use cpu, cuda, cuda:N or auto"):
        resolve_device("gpu please")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match="no CUDA GPU" if gpus == 0 else f"has {gpus} CUDA GPU"):
        resolve_device(f"cuda:{gpus}")  # one past the last


def test_shipped_recipe_configs_are_valid():
    from asr_engine.model.config import ModelConfig

    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.json"))
    assert configs
    for path in configs:
        cfg = TrainConfig.load(path)
        ModelConfig(vocab_size=cfg.tokenizer.get("vocab_size", 29), **cfg.model)


def test_config_extends_another(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "a.json").write_text(json.dumps(dict(
        train_manifest="m.jsonl", out_dir="runs/a", steps=100, lr=1e-3,
        model=dict(d_model=64, chunk_size=8), tokenizer=dict(kind="bpe", vocab_size=128))))
    (tmp_path / "b.json").write_text(json.dumps(dict(
        extends="base/a.json", out_dir="runs/b", lr=5e-4, model=dict(chunk_size=16))))
    cfg = TrainConfig.load(tmp_path / "b.json")
    assert (cfg.train_manifest, cfg.out_dir, cfg.steps, cfg.lr) == ("m.jsonl", "runs/b", 100, 5e-4)
    assert cfg.model == dict(d_model=64, chunk_size=16)  # tables merge key by key
    assert cfg.tokenizer == dict(kind="bpe", vocab_size=128)
    (tmp_path / "c.json").write_text(json.dumps(dict(extends="b.json", nope=1)))
    with pytest.raises(ValueError, match="nope"):
        TrainConfig.load(tmp_path / "c.json")
    (tmp_path / "base" / "a.json").write_text(json.dumps(dict(extends="../b.json")))
    with pytest.raises(ValueError, match="cycle"):
        TrainConfig.load(tmp_path / "b.json")
    (tmp_path / "d.json").write_text(json.dumps(dict(extends="missing.json")))
    with pytest.raises(OSError):
        TrainConfig.load(tmp_path / "d.json")


def test_stage_configs_resolve_to_their_recipe():
    configs = Path(__file__).parent.parent / "configs"
    s2, s3, s4, s5 = (TrainConfig.load(configs / f"tiny-stage{i}.json") for i in (2, 3, 4, 5))
    assert (s3.init_from, s4.init_from) == ("runs/tiny-stage2/last", "runs/tiny-stage3/last")
    assert s5.init_from == "runs/tiny-stage4/last"
    assert s3.model == s2.model and s4.model == s2.model and s5.model == s2.model
    assert (s3.steps, s3.lr, s4.steps, s4.lr, s5.steps, s5.lr) == (8000, 5e-4, 8000, 3e-4, 8000, 2e-4)
    assert s4.skip_train_start == 0 and s4.max_frames == s2.max_frames
    assert (s4.skip_train_prob, s4.skip_train_threshold) == (0.5, 0.9)
    assert (s5.skip_train_prob, s5.skip_train_threshold) == (0.8, 0.95)
    # the skip-distillation experiment (not shipped): stage 5's recipe plus the distillation term
    x = TrainConfig.load(configs / "experiment-skip-distill.json")
    assert x.init_from == "runs/tiny-stage5/last" and x.model == s5.model
    assert (x.steps, x.lr, x.skip_train_prob, x.skip_train_threshold) == (6000, 1.5e-4, 0.9, 0.95)
    assert x.loss == {"skip_distill": 1.0} and s5.loss == {}
    # its continuation (not shipped either): lower peak LR, 20% of steps on the unskipped path (not 10%)
    x2 = TrainConfig.load(configs / "experiment-skip-distill-2.json")
    assert x2.init_from == "runs/experiment-skip-distill/last" and x2.model == s5.model and x2.loss == x.loss
    assert (x2.steps, x2.lr, x2.eval_every) == (7000, 1e-4, 2000)
    assert (x2.skip_train_prob, x2.skip_train_threshold) == (0.8, 0.95)
    # more data from there: a third corpus (data/mixed2), back to stage 5's peak LR
    x3 = TrainConfig.load(configs / "experiment-more-data.json")
    assert x3.init_from == "runs/experiment-skip-distill-2/last" and x3.model == s5.model and x3.loss == x.loss
    assert x3.train_manifest == x2.train_manifest + ["data/mixed2/manifest.jsonl"]
    assert (x3.steps, x3.lr, x3.skip_train_prob) == (6000, 2e-4, 0.8)


def test_fine_tuning_an_imported_whisper_encoder(tmp_path):
    """From an import-whisper checkpoint: Whisper features in the checkpoint, the imported weights
    frozen for freeze_pretrained_steps while the new heads and conv modules learn, then all learn
    with the feature distillation term in the loss."""
    from asr_engine.checkpoint import save_checkpoint
    from asr_engine.pretrained import import_whisper, pretrained_parameter_names

    from test_pretrained import tiny_whisper, write_ct2

    manifest = _manifest(tmp_path)
    init = import_whisper([write_ct2(tmp_path / "model.bin", tiny_whisper())], chunk_size=4, left_chunks=2,
                          feat_floor=-6.0)
    save_checkpoint(init, tmp_path / "init")
    base = dict(train_manifest=str(manifest), init_from=str(tmp_path / "init"), max_frames=400, bf16=False,
                warmup_steps=1, freeze_pretrained_steps=2, pretrained_lr_scale=0.5, skip_train_start=100,
                loss={"feature": 1.0})
    train(TrainConfig(out_dir=str(tmp_path / "frozen"), steps=2, **base), progress=False)
    frozen = load_checkpoint(tmp_path / "frozen" / "last")
    assert frozen.features.kind == "whisper" and frozen.model.cfg.block == "whisper"
    before, after = init.model.state_dict(), frozen.model.state_dict()
    pretrained = pretrained_parameter_names(init.model.cfg)
    assert pretrained and all(torch.equal(before[k], after[k]) for k in pretrained)
    assert not torch.equal(before["final_head.out.weight"], after["final_head.out.weight"])
    assert not torch.equal(before["layers.0.conv.pw2.weight"], after["layers.0.conv.pw2.weight"])
    train(TrainConfig(out_dir=str(tmp_path / "adapters"), steps=3, **{**base, "freeze_pretrained_steps": 0,
                                                                      "pretrained_lr_scale": 0.0}), progress=False)
    adapters = load_checkpoint(tmp_path / "adapters" / "last").model.state_dict()  # scale 0: never learn
    assert all(torch.equal(before[k], adapters[k]) for k in pretrained)
    assert not torch.equal(before["layers.0.conv.pw2.weight"], adapters["layers.0.conv.pw2.weight"])
    train(TrainConfig(out_dir=str(tmp_path / "all"), steps=4, **base), progress=False)
    moved = load_checkpoint(tmp_path / "all" / "last").model.state_dict()
    assert any(not torch.equal(before[k], moved[k]) for k in pretrained)
    # a second stage keeps Whisper itself as the teacher; without any teacher the feature loss is refused
    train(TrainConfig(out_dir=str(tmp_path / "next"), steps=1, **{**base, "init_from": str(tmp_path / "all" / "last")},
                      teacher_from=str(tmp_path / "init")), progress=False)
    assert load_checkpoint(tmp_path / "next" / "last").info["step"] == 1
    with pytest.raises(ValueError, match="needs a teacher"):
        train(TrainConfig(out_dir=str(tmp_path / "none"), train_manifest=str(manifest), steps=1,
                          model=dict(d_model=32, n_heads=2, n_layers=2, intermediate_layers=[1], skip_layer=1),
                          loss={"feature": 1.0}, bf16=False), progress=False)


def test_feature_distillation_loss_counts_valid_frames_only():
    from asr_engine.losses import feature_distillation

    s = torch.zeros(2, 3, 4)
    t = torch.ones(2, 3, 4)
    t[1, 2] = 100.0  # padding: ignored
    valid = torch.tensor([[True, True, True], [True, True, False]])
    assert float(feature_distillation(s, t, valid)) == pytest.approx(5 / 2)


def test_spec_augment_masks_bands_and_spans_inside_each_utterance():
    from asr_engine.data.loader import spec_augment

    x = torch.randn(3, 200, 40)
    lengths = torch.tensor([200, 120, 30])
    fill = torch.full((40,), 7.0)
    out = spec_augment(x, lengths, fill, torch.Generator().manual_seed(1), freq_width=6, time_frac=0.1)
    again = spec_augment(x, lengths, fill, torch.Generator().manual_seed(1), freq_width=6, time_frac=0.1)
    assert torch.equal(out, again) and not torch.equal(out, x)
    masked = out == 7.0
    band = masked.all(1)  # (B, F) bins masked at every frame
    span = masked.all(2)  # (B, T) frames masked in every bin
    assert (band.sum(1) <= 2 * 6).all() and band.any()
    for b, n in enumerate(lengths.tolist()):
        assert not span[b, n:].any()  # the padding is never a time mask
        assert span[b].sum() <= 4 * max(1, int(0.1 * n))
    changed = masked & ~band[:, None, :] & ~span[:, :, None]
    assert not changed.any()  # every masked value lies in a band or a span
    assert torch.equal(out[~masked], x[~masked])


def test_prefetcher_yields_the_collated_batches_in_order_and_raises_their_errors():
    from asr_engine.data.loader import FeatureSet, Prefetcher, collate

    fs = FeatureSet([torch.randn(n, 4).half() for n in (5, 9, 3, 7)], [[1], [2, 3], [4], [5, 6, 7]], list("abcd"))
    batches = [[0, 1], [2], [3, 0]]
    got = list(Prefetcher(fs, batches))
    assert [g[0] for g in got] == batches
    for (idx, *tensors) in got:
        for t, ref in zip(tensors, collate(fs, idx)):
            assert torch.equal(t, ref)
    with pytest.raises(IndexError):
        list(Prefetcher(fs, [[0], [99]]))
    early = Prefetcher(fs, batches * 50, depth=1)
    next(iter(early))
    early.close()
    assert not early._thread.is_alive()


def test_anchor_pulls_the_imported_weights_toward_their_anchor(tmp_path):
    """L2-SP: with `anchor` the imported weights that train move less from anchor_from's than without."""
    from asr_engine.checkpoint import save_checkpoint
    from asr_engine.pretrained import import_whisper, pretrained_parameter_names
    from asr_engine.train import anchor_penalty

    from test_pretrained import tiny_whisper, write_ct2

    manifest = _manifest(tmp_path)
    init = import_whisper([write_ct2(tmp_path / "model.bin", tiny_whisper())], chunk_size=4, left_chunks=2,
                          feat_floor=-6.0)
    save_checkpoint(init, tmp_path / "init")
    base = dict(train_manifest=str(manifest), init_from=str(tmp_path / "init"), max_frames=400, bf16=False,
                warmup_steps=1, lr=0.01, pretrained_lr_scale=1.0, skip_train_start=100, steps=4)
    names = sorted(pretrained_parameter_names(init.model.cfg))
    before = init.model.state_dict()

    def drift(run: str, **kw) -> float:
        train(TrainConfig(out_dir=str(tmp_path / run), **{**base, **kw}), progress=False)
        after = load_checkpoint(tmp_path / run / "last").model.state_dict()
        return sum(float(((after[k] - before[k]) ** 2).sum()) for k in names)

    free = drift("free")
    held = drift("held", anchor=1000.0, anchor_from=str(tmp_path / "init"))
    assert 0 < held < 0.5 * free
    with pytest.raises(ValueError, match="needs anchor_from"):
        train(TrainConfig(out_dir=str(tmp_path / "x"), **{**base, "anchor": 1.0}), progress=False)
    # the penalty itself: zero at the anchor, the squared distance elsewhere, only weights that train
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    frozen = torch.nn.Parameter(torch.tensor([5.0]), requires_grad=False)
    pairs = [(w, torch.tensor([1.0, 0.0])), (frozen, torch.tensor([0.0]))]
    assert float(anchor_penalty(pairs).detach()) == 4.0
    assert float(anchor_penalty([(w, w.detach().clone())]).detach()) == 0.0


def test_blocks_taught_by_their_own_unskipped_pass_alone(tmp_path):
    """loss ctc 0 with skip_distill and new_lr_scale 0: no transcript reaches the loss, the compacted pass learns
    from the unskipped one, and only the imported weights move (the heads and conv modules stay as they were)."""
    from asr_engine.checkpoint import save_checkpoint
    from asr_engine.pretrained import import_whisper, pretrained_parameter_names

    from test_pretrained import tiny_whisper, write_ct2

    manifest = _manifest(tmp_path)
    init = import_whisper([write_ct2(tmp_path / "model.bin", tiny_whisper())], chunk_size=4, left_chunks=2,
                          feat_floor=-6.0)
    save_checkpoint(init, tmp_path / "init")
    base = dict(train_manifest=str(manifest), init_from=str(tmp_path / "init"), max_frames=400, bf16=False,
                warmup_steps=1, lr=0.01, skip_train_start=0, skip_train_prob=1.0, skip_train_threshold=0.5,
                steps=3, new_lr_scale=0.0, weight_decay=0.0,
                loss={"ctc": 0.0, "intermediate_ctc": 0.0, "distill_blank": 0.0, "distill_token": 0.0,
                      "skip_distill": 1.0})
    train(TrainConfig(out_dir=str(tmp_path / "self"), **base), progress=False)
    before = init.model.state_dict()
    after = load_checkpoint(tmp_path / "self" / "last").model.state_dict()
    pretrained = pretrained_parameter_names(init.model.cfg)
    new = [k for k in before if k not in pretrained and not k.startswith("feat_")]
    assert new and all(torch.equal(before[k], after[k]) for k in new)
    assert any(not torch.equal(before[k], after[k]) for k in pretrained)
    # with nothing to learn from (no transcripts, no skipping steps; no weight decay), nothing moves
    train(TrainConfig(out_dir=str(tmp_path / "still"), **{**base, "skip_train_prob": 0.0}), progress=False)
    still = load_checkpoint(tmp_path / "still" / "last").model.state_dict()
    assert all(torch.equal(before[k], still[k]) for k in before)


@pytest.mark.parametrize("frozen", [0, 1])
def test_a_fixed_teacher_teaches_the_final_head_on_every_step(tmp_path, frozen):
    """skip_teacher_from: a frozen checkpoint's pass without skipping teaches the final head, whole or compacted.
    Whole passes move toward the teacher's outputs (from the cache or not); compacted steps learn from it with the
    heads fixed; a weight of 0 for skip_distill is refused (the teacher would teach nothing)."""
    from asr_engine.checkpoint import save_checkpoint
    from asr_engine.data.loader import collate, load_features
    from asr_engine.losses import factorized_distillation
    from asr_engine.model.fbank import Fbank
    from asr_engine.pretrained import import_whisper, pretrained_parameter_names

    from test_pretrained import tiny_whisper, write_ct2

    manifest = _manifest(tmp_path)
    init = import_whisper([write_ct2(tmp_path / "model.bin", tiny_whisper())], chunk_size=4, left_chunks=2,
                          feat_floor=-6.0)
    save_checkpoint(init, tmp_path / "init")
    other = load_checkpoint(tmp_path / "init")
    with torch.no_grad():
        other.model.layers[-1].ff.net[0].weight.mul_(1.5)  # another top layer: another whole pass
    save_checkpoint(other, tmp_path / "other")
    base = dict(train_manifest=str(manifest), init_from=str(tmp_path / "init"), max_frames=400, bf16=False,
                warmup_steps=1, lr=3e-4, skip_train_start=0, skip_train_prob=0.0, skip_train_threshold=0.5,
                steps=10, new_lr_scale=0.0, weight_decay=0.0, model={"dropout": 0.0}, frozen_layers=frozen,
                skip_teacher_from=str(tmp_path / "other"), random_position_offset=False,
                loss={"ctc": 0.0, "intermediate_ctc": 0.0, "distill_blank": 0.0, "distill_token": 0.0,
                      "skip_distill": 1.0})
    before = init.model.state_dict()
    pretrained = pretrained_parameter_names(init.model.cfg)

    def trained(name: str, **changes):
        train(TrainConfig(out_dir=str(tmp_path / name), **{**base, **changes}), progress=False)
        return load_checkpoint(tmp_path / name / "last").model

    fs = load_features(str(manifest), init.tokenizer, Fbank(init.features), 20.0)
    x, xl, _, _ = collate(fs, list(range(len(fs))))

    def gap(model) -> float:  # the teacher's whole pass against the model's on the training audio
        with torch.no_grad():
            want, got = other.model.eval()(x, xl), model.eval()(x, xl)
            blank, token = factorized_distillation(want.final, got.final, got.top_mask)
        return float(blank + token)

    taught = trained("taught")
    assert gap(taught) < 0.85 * gap(init.model)  # (without the teacher, whole passes would learn nothing)
    compacted = trained("compacted", skip_train_prob=1.0).state_dict()
    new = [k for k in before if k not in pretrained and not k.startswith("feat_")]
    assert new and all(torch.equal(before[k], compacted[k]) for k in new)
    assert any(not torch.equal(before[k], compacted[k]) for k in pretrained)
    with pytest.raises(ValueError, match="skip_distill"):
        trained("no_weight", loss={"skip_distill": 0.0})
