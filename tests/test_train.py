import json

import soundfile as sf

from asr_engine.checkpoint import load_checkpoint
from asr_engine.train import TrainConfig, lr_at, train

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
    import pytest
    with pytest.raises(ValueError, match="unknown train config keys"):
        TrainConfig.from_dict({"train_manifest": "x", "out_dir": "y", "nope": 1})


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(train_manifest="x", out_dir="y", steps=100, warmup_steps=10, lr=1.0)
    assert lr_at(0, cfg) < lr_at(9, cfg) == 1.0
    assert lr_at(50, cfg) < 1.0 and abs(lr_at(100, cfg) - 0.05) < 1e-9
