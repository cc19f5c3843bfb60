import json

import pytest
import soundfile as sf

from asr_engine.checkpoint import load_checkpoint
from asr_engine.cli import main
from asr_engine.evaluate import evaluate
from asr_engine.manifest import read_manifest
from asr_engine.text import char_error_counts

from conftest import tone


@pytest.fixture
def manifest(tmp_path):
    rows = []
    for i, (sec, engine) in enumerate([(1.0, "espeak-ng"), (2.0, "flite"), (1.5, "flite")]):
        sf.write(tmp_path / f"{i}.wav", tone(sec, freq=300 + 200 * i), 16000)
        rows.append({"audio": f"{i}.wav", "text": f"word {i}", "duration": sec, "engine": engine})
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_char_error_counts():
    assert char_error_counts("a cat", "a cat") == (0, 5)
    assert char_error_counts("a cat", "a bat") == (1, 5)
    assert char_error_counts("One", "won") == (2, 3)


def test_eval_table_matches_transcribe_and_reports_skipping(tiny_ckpt_dir, manifest):
    from asr_engine.engine import DecodeOptions, Engine

    ck = load_checkpoint(tiny_ckpt_dir)
    utts = read_manifest(manifest)
    rep = evaluate(ck, utts, ["a", "b", "b"], [1.0, 0.0001], batch_size=2)
    off, all_skip = rep.settings
    assert off.top_fraction == 1.0 and all_skip.top_fraction < 1.0
    assert off.total.utterances == 3 and set(off.per_source) == {"a", "b"} and off.per_source["b"].utterances == 2
    # the eval's hypotheses are the transcriber's, one by one
    tr = Engine(ck, DecodeOptions(skip_threshold=1.0))
    assert off.hypotheses == [r.text for r in tr.transcribe_files([u.audio for u in utts])]
    assert off.rtf > 0 and rep.audio_seconds == pytest.approx(4.5)


def test_eval_cli_prints_threshold_table_and_json(tiny_ckpt_dir, manifest, tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["eval", str(manifest), "--model", str(tiny_ckpt_dir), "--thresholds", "1.0,0.5",
                 "--by-source", "--json", str(out), "-q"])
    assert code == 0
    text = capsys.readouterr().out
    assert "skip threshold" in text and "off" in text and "0.5" in text and "espeak-ng" in text
    rep = json.loads(out.read_text())
    assert [s["threshold"] for s in rep["settings"]] == [1.0, 0.5]
    assert rep["settings"][0]["top_fraction"] == 1.0
    assert set(rep["settings"][0]["per_source"]) == {"espeak-ng", "flite"}


def test_eval_cli_reports_each_manifest_of_a_folder_apart(tiny_ckpt_dir, manifest, tmp_path):
    rows = manifest.read_text().splitlines(keepends=True)
    (tmp_path / "first.jsonl").write_text(rows[0])
    (tmp_path / "rest.jsonl").write_text("".join(rows[1:]))
    out = tmp_path / "r.json"
    assert main(["eval", str(tmp_path / "first.jsonl"), str(tmp_path / "rest.jsonl"), "--model", str(tiny_ckpt_dir),
                 "--thresholds", "1.0", "--json", str(out), "-q"]) == 0
    per = json.loads(out.read_text())["settings"][0]["per_source"]
    assert {k: v["utterances"] for k, v in per.items()} == {"first": 1, "rest": 2}


def test_eval_cli_bad_arguments(tiny_ckpt_dir, manifest, tmp_path, capsys):
    assert main(["eval", str(manifest), "--model", str(tiny_ckpt_dir), "--thresholds", "x", "-q"]) == 2
    assert main(["eval", str(manifest), "--model", str(tiny_ckpt_dir), "--thresholds", "1.5", "-q"]) == 2
    assert main(["eval", str(tmp_path / "none.jsonl"), "--model", str(tiny_ckpt_dir), "-q"]) == 2
    assert "no such manifest" in capsys.readouterr().err
    audio = read_manifest(manifest)[0].audio  # an audio file given for the manifest
    assert main(["eval", str(audio), "--model", str(tiny_ckpt_dir), "-q"]) == 2
    err = capsys.readouterr().err  # was a UnicodeDecodeError's "'utf-8' codec can't decode byte ..."
    assert f"{audio}: not a manifest (UTF-8 JSON lines" in err and "codec" not in err
    with pytest.raises(SystemExit):
        main(["eval", str(manifest), "--model", str(tiny_ckpt_dir), "--beam", "0", "-q"])
    assert "argument --beam: 0: must be at least 1" in capsys.readouterr().err


def test_the_per_source_table_has_a_column_for_every_threshold():
    from asr_engine.evaluate import EvalReport, Score, SettingResult, format_report

    def setting(th, errs):
        per = {src: Score(word_errors=e, words=10, char_errors=e, chars=40, utterances=2) for src, e in errs.items()}
        total = Score(sum(s.word_errors for s in per.values()), 20, sum(s.char_errors for s in per.values()), 80, 4)
        return SettingResult(th, total, per, 1.0 if th >= 1 else 0.7, 0.01)

    report = EvalReport([setting(1.0, {"dev_real": 3, "heldout": 1}), setting(0.99, {"dev_real": 4, "heldout": 2}),
                         setting(0.95, {"dev_real": 5, "heldout": 2})], 60.0, [])
    text = format_report(report, 0.95)  # 0.99 is neither off nor the default: it has its column too
    row = next(line for line in text.splitlines() if line.startswith("dev_real"))
    assert row.split("|")[2:] == [" 30.00% /  7.50% ", " 40.00% / 10.00% ", " 50.00% / 12.50%"]
    assert "0.95 (default)" in text and "heldout" in text
    one = EvalReport([SettingResult(1.0, Score(1, 10, 1, 40, 1), {"x": Score(1, 10, 1, 40, 1)}, 1.0, 0.01)], 1.0, [])
    assert "per source" not in format_report(one, 0.95)  # one source: the totals say it all


def test_eval_context_full_reads_as_transcribe_decodes_files_by_default(tmp_path, capsys):
    # a model recommending full context: transcribe's default on files is what eval --context full measures;
    # eval's own default stays the streaming layout (as live audio is decoded)
    import shutil

    from asr_engine.backend import default_model_dir

    model = shutil.copytree(default_model_dir(), tmp_path / "model")
    (model / "decoding.json").write_text('{"context": "full"}')
    samples = "asr_engine/samples/manifest.jsonl"
    texts = {}
    for context in ("full", "streaming"):
        assert main(["eval", samples, "--model", str(model), "--context", context, "--thresholds", "1.0", "-q",
                     "--json", str(tmp_path / f"{context}.json")]) == 0
        texts[context] = json.loads((tmp_path / f"{context}.json").read_text())["settings"][0]["hypotheses"]
    capsys.readouterr()
    assert main(["transcribe", samples, "--model", str(model), "--skip-threshold", "1.0", "--format", "jsonl",
                 "-q"]) == 0
    assert [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()] == texts["full"]
    assert main(["eval", samples, "--model", str(model), "--thresholds", "1.0", "-q", "--json",
                 str(tmp_path / "default.json")]) == 0
    assert json.loads((tmp_path / "default.json").read_text())["settings"][0]["hypotheses"] == texts["streaming"]
