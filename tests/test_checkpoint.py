import json

import pytest
import torch

from asr_engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from asr_engine.model.encoder import Encoder
from asr_engine.tokenizer import BPETokenizer, train_bpe

from conftest import tiny_config

CER_BOUND = 0.25  # the bundled model on the bundled samples (espeak-ng and flite voices): measured 0.08


def test_round_trip(tiny_ckpt_dir):
    a = load_checkpoint(tiny_ckpt_dir)
    b = load_checkpoint(tiny_ckpt_dir)
    x, xl = torch.randn(2, 100, 80), torch.tensor([100, 80])
    with torch.no_grad():
        assert torch.equal(a.model(x, xl).final.raw, b.model(x, xl).final.raw)
    assert a.model.cfg == tiny_config()
    assert (tiny_ckpt_dir / "model.safetensors").is_file()
    assert not list(tiny_ckpt_dir.glob("*.pt")) and not list(tiny_ckpt_dir.glob("*.bin"))


def test_round_trip_keeps_weights_and_bpe(tmp_path):
    tok = train_bpe(["hello there world", "press one to continue"] * 20, 30, tmp_path / "bpe")
    torch.manual_seed(3)
    model = Encoder(tiny_config(vocab_size=len(tok.vocab)))
    save_checkpoint(Checkpoint(model, tok, info={"note": "test"}), tmp_path / "ck")
    ck = load_checkpoint(tmp_path / "ck")
    assert isinstance(ck.tokenizer, BPETokenizer) and ck.tokenizer.vocab == tok.vocab
    assert ck.info == {"note": "test"}
    for k, v in model.state_dict().items():
        assert torch.equal(v, ck.model.state_dict()[k]), k


@pytest.mark.parametrize("where", ["top", "model", "features", "tokenizer"])
def test_unknown_keys_are_errors(tiny_ckpt_dir, tmp_path, where):
    import shutil
    d = tmp_path / "ck"
    shutil.copytree(tiny_ckpt_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    (cfg if where == "top" else cfg[where])["surprise"] = 1
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown"):
        load_checkpoint(d)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        load_checkpoint(tmp_path)


def test_bundled_default_model_is_whispers_encoder_and_hears_the_bundled_samples():
    from asr_engine.backend import bundled_model_dir
    from asr_engine.engine import Engine
    from asr_engine.manifest import read_manifest
    from asr_engine.text import char_error_counts

    ck = load_checkpoint(bundled_model_dir())
    cfg = ck.model.cfg
    assert (cfg.block, cfg.stem, cfg.d_model, cfg.n_layers) == ("whisper", "whisper", 512, 6)
    assert ck.model.cfg.vocab_size == len(ck.tokenizer.vocab) and ck.info["trained_on"]
    samples = read_manifest(bundled_model_dir().parent.parent / "samples" / "manifest.jsonl")
    results = Engine(ck).transcribe_files([u.audio for u in samples])
    assert all(r.error is None and r.frames > 0 for r in results)
    assert all(abs(r.duration - u.duration) < 0.05 for r, u in zip(results, samples))
    errors, chars = map(sum, zip(*(char_error_counts(u.text, r.text) for u, r in zip(samples, results))))
    assert errors / chars < CER_BOUND


def test_asr_engine_model_names_the_default_checkpoint(monkeypatch, tiny_ckpt_dir):
    from asr_engine.backend import bundled_model_dir, default_model_dir

    monkeypatch.setenv("ASR_ENGINE_MODEL", str(tiny_ckpt_dir))
    assert default_model_dir() == tiny_ckpt_dir and load_checkpoint().model.cfg == tiny_config()
    monkeypatch.delenv("ASR_ENGINE_MODEL")
    assert default_model_dir() == bundled_model_dir() and load_checkpoint().model.cfg.d_model == 512


def test_package_makes_a_portable_fp16_copy(tmp_path, capsys):
    from safetensors import safe_open

    from asr_engine.checkpoint import package_checkpoint
    from asr_engine.cli import main
    from asr_engine.tokenizer import CharTokenizer

    torch.manual_seed(1)
    info = {"step": 1200, "train_manifest": ["/home/me/data/clean/manifest.jsonl", "/home/me/data/mixed/m.jsonl"],
            "init_from": "/home/me/runs/stage1/last"}
    src = save_checkpoint(Checkpoint(Encoder(tiny_config()).eval(), CharTokenizer(), info=info), tmp_path / "run")
    r = package_checkpoint(src, tmp_path / "ship", trained_on="two test sets")
    cfg = json.loads((tmp_path / "ship" / "config.json").read_text())
    assert cfg["info"]["train_manifest"] == ["clean/manifest.jsonl", "mixed/m.jsonl"]
    assert cfg["info"]["init_from"] == "stage1/last" and cfg["info"]["trained_on"] == "two test sets"
    with safe_open(str(tmp_path / "ship" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} <= {torch.float16, torch.int64, torch.bool}
    assert (tmp_path / "ship" / "model.safetensors").stat().st_size < 0.6 * (src / "model.safetensors").stat().st_size
    assert r["fp16"] and r["step"] == 1200 and r["argmax_agreement"] > 0.95 and 0 < r["max_logprob_diff"] < 0.05
    assert json.loads((src / "config.json").read_text())["info"] == info  # the source is left as it was
    # the command line: an explicit --init-from, and the copy loads
    code = main(["package", str(src), str(tmp_path / "ship2"), "--init-from", "stage 1", "--fp32"])
    assert code == 0 and "reloaded: 100.00% of frames" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "ship2").info["init_from"] == "stage 1"


def test_package_refuses_its_own_folder_and_a_missing_one(tiny_ckpt_dir, tmp_path, capsys):
    from asr_engine.cli import main

    assert main(["package", str(tiny_ckpt_dir), str(tiny_ckpt_dir)]) == 2
    assert "must differ" in capsys.readouterr().err
    assert main(["package", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_package_drops_conv_modules_that_compute_nothing(tmp_path):
    """A Whisper layer kept frozen as imported has a conv module whose output projection is still zero:
    the shipped copy has none there (conv_layers), and computes the same outputs, streaming included."""
    from asr_engine.checkpoint import package_checkpoint
    from asr_engine.model.streaming import StreamState
    from asr_engine.tokenizer import CharTokenizer

    from conftest import tiny_model

    model = tiny_model("whisper", conv_layers=None)  # every layer has one, all random...
    for i in (0, 2):  # ...but layers 1 and 3 are as imported
        torch.nn.init.zeros_(model.layers[i].conv.pw2.weight)
        torch.nn.init.zeros_(model.layers[i].conv.pw2.bias)
    src = save_checkpoint(Checkpoint(model, CharTokenizer()), tmp_path / "run")
    r = package_checkpoint(src, tmp_path / "ship", half=False)
    ship = load_checkpoint(tmp_path / "ship").model
    assert r["conv_layers"] == (2, 4) and ship.cfg.conv_layers == (2, 4)
    assert ship.layers[0].conv is None and ship.layers[1].conv is not None
    assert sum(p.numel() for p in ship.parameters()) < sum(p.numel() for p in model.parameters())
    x, xl = torch.randn(2, 130, 80), torch.tensor([130, 97])
    with torch.no_grad():
        torch.testing.assert_close(ship(x, xl).final.raw, model(x, xl).final.raw, atol=1e-5, rtol=0)
        n = ship.cfg.input_frames(ship.cfg.chunk_size + ship.cfg.right_context)
        a, b = (m.forward_chunk(x[:, :n], torch.tensor([5, 5]), StreamState.zeros(m.cfg, 2))[0].final.raw
                for m in (ship, model))
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # a second package of the slim copy changes nothing
    assert package_checkpoint(tmp_path / "ship", tmp_path / "again", half=False)["conv_layers"] == (2, 4)
