import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from asr_engine.cli import main
from asr_engine.data.synth import (AugmentPlan, SynthJob, augment, make_jobs, synthesize,
                                   synthesize_corpus)
from asr_engine.manifest import read_manifest

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")

SENTENCES = ["please enter your phone number", "the cat sat on the mat", "good morning"]


def test_jobs_are_deterministic_for_a_seed_and_follow_the_weights():
    a = make_jobs(SENTENCES, 200, 7, ["espeak-ng", "piper"], "x", augment_prob=0.5)
    assert a == make_jobs(SENTENCES, 200, 7, ["espeak-ng", "piper"], "x", augment_prob=0.5)
    assert a != make_jobs(SENTENCES, 200, 8, ["espeak-ng", "piper"], "x", augment_prob=0.5)
    assert len({j.uid for j in a}) == 200 and all(j.text in SENTENCES for j in a)
    assert 60 < sum(j.augment for j in a) < 140
    only = make_jobs(SENTENCES, 50, 0, ["espeak-ng", "piper"], "x", weights={"piper": 1.0})
    assert {j.engine for j in only} == {"piper"} and {j.voice for j in only} == {"joe"}
    with pytest.raises(ValueError, match="unknown"):
        make_jobs(SENTENCES, 1, 0, ["sam"], "x")


def test_augment_plan_is_drawn_from_the_seed():
    assert AugmentPlan.draw(3) == AugmentPlan.draw(3) != AugmentPlan.draw(4)
    plans = [AugmentPlan.draw(s) for s in range(300)]
    assert all(0.88 <= p.vtlp <= 1.12 and 0.85 <= p.tempo <= 1.15 for p in plans)
    assert 40 < sum(p.telephone for p in plans) < 110 and 100 < sum(p.noise is not None for p in plans) < 200


@needs_sox
def test_augmentation_is_deterministic_and_does_what_it_says(tmp_path):
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(16000)).astype(np.float32)  # white: energy at every frequency
    plan = AugmentPlan(vtlp=1.0, pitch_cents=0.0, tempo=1.0, rt60=None, telephone=True, noise=None,
                       snr_db=20.0, peak=0.5, lead_s=0.25, trail_s=0.0)
    y = augment(x, plan, 1, tmp_path)
    assert np.array_equal(y, augment(x, plan, 1, tmp_path))
    assert abs(len(y) - 20000) < 200 and np.abs(y).max() == pytest.approx(0.5, rel=1e-4)
    assert np.abs(y[:3900]).max() < 0.05  # the lead silence
    spec = np.abs(np.fft.rfft(y[4000:])) ** 2
    freqs = np.fft.rfftfreq(len(y[4000:]), 1 / 16000)
    assert spec[freqs > 4200].sum() < 0.01 * spec[(freqs > 400) & (freqs < 3400)].sum()  # telephone band
    slow = augment(x, AugmentPlan(1.0, 0.0, 0.5, None, False, None, 20.0, 0.5, 0.0, 0.0), 1, tmp_path)
    assert abs(len(slow) - 32000) < 400  # tempo 0.5 doubles the length


@needs_espeak
@needs_sox
def test_corpus_with_espeak_is_resumable_and_reproducible(tmp_path):
    jobs = make_jobs(SENTENCES, 4, 1, ["espeak-ng"], "t", augment_prob=0.5)
    jobs[0] = SynthJob(**{**jobs[0].__dict__, "augment": True})
    manifest, failed = synthesize_corpus(jobs, tmp_path / "a", workers=2, progress=False)
    assert failed == []
    utts = read_manifest(manifest)
    assert [u.text for u in utts] == [j.text for j in jobs]
    for u in utts:
        audio, sr = sf.read(u.audio)
        assert sr == 16000 and 0.5 < len(audio) / sr == pytest.approx(u.duration, abs=1e-3)
        assert u.extra["engine"] == "espeak-ng" and u.extra["voice"]
    assert utts[0].extra["augment"].startswith("vtlp=")
    # resuming keeps what is there (and describes it the same); a fresh run reproduces the audio
    mtime = utts[0].audio.stat().st_mtime_ns
    manifest2, _ = synthesize_corpus(jobs, tmp_path / "a", workers=1, progress=False)
    assert utts[0].audio.stat().st_mtime_ns == mtime and read_manifest(manifest2) == utts
    row = synthesize(jobs[0], tmp_path / "b")
    assert np.array_equal(sf.read(tmp_path / "b" / row["audio"])[0], sf.read(utts[0].audio)[0])


def test_failures_are_reported_not_fatal(tmp_path):
    jobs = [SynthJob("bad0000001", "hello", "nonesuch", "x", 1.0, 50)]
    manifest, failed = synthesize_corpus(jobs, tmp_path, workers=1, progress=False)
    assert len(failed) == 1 and "bad0000001" in failed[0] and manifest.read_text() == ""


@needs_espeak
def test_data_synth_cli(tmp_path, capsys):
    code = main(["data", "synth", "--out", str(tmp_path / "c"), "--num", "3", "--engines", "espeak-ng",
                 "--augment-prob", "0", "--workers", "1", "--quiet"])
    if code == 2 and "no sentences" in capsys.readouterr().err:
        pytest.skip("wordnet-base / fortunes are not installed")
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "c" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["engine"] == "espeak-ng" for r in rows)
    assert main(["data", "synth", "--out", str(tmp_path / "d"), "--engines", "nonesuch", "--quiet"]) == 2
    assert "not installed" in capsys.readouterr().err
