import json
import subprocess
import sys

import pytest

from asr_engine.cli import build_parser, main


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def files(wav, tmp_path):
    return [wav("a.wav", 1.0), wav("b.wav", 2.0, sr=44100), wav("c.wav", 0.5, sr=8000, channels=2)]


@pytest.mark.parametrize("fmt", ["jsonl", "txt"])
def test_transcripts_are_written_as_each_batch_is_done(tiny_ckpt_dir, files, tmp_path, monkeypatch, fmt):
    """Several files' jsonl or txt lines reach the output as each batch is decoded (they were all written at the
    end), so a job stopped midway (Ctrl-C) keeps what it had done; the whole output is what it was."""
    from asr_engine.engine import Engine

    out = tmp_path / f"all.{fmt}"
    seen = []
    decode = Engine.transcribe_files

    def spy(self, paths, *a, **k):
        seen.append(len(out.read_text().splitlines()) if out.exists() else 0)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return decode(self, paths, *a, **k)

    monkeypatch.setattr(Engine, "transcribe_files", spy)
    args = ["transcribe", "--model", str(tiny_ckpt_dir), "--batch-size", "1", "--format", fmt, "-o", str(out)]
    with pytest.raises(KeyboardInterrupt):
        main([*args, *map(str, files)])
    assert seen == [0, 1, 2]
    lines = out.read_text().splitlines()
    paths = [json.loads(line)["path"] for line in lines] if fmt == "jsonl" else [line.split("\t")[0] for line in lines]
    assert paths == [str(files[0]), str(files[1])]
    monkeypatch.setattr(Engine, "transcribe_files", decode)
    assert main([*args, *map(str, files)]) == 0
    whole = out.read_text()
    assert main(["transcribe", "--model", str(tiny_ckpt_dir), "--format", fmt, "-o", str(out), *map(str, files)]) == 0
    assert out.read_text() == whole and whole.count("\n") == 3  # batches of 1 or of 8: the same output


def test_txt_single_and_many(tiny_ckpt_dir, files, capsys):
    code, out, err = run(["transcribe", "--model", str(tiny_ckpt_dir), str(files[0])], capsys)
    assert code == 0 and out.count("\n") == 1 and "\t" not in out
    assert "summary: files: 1 ok, 0 failed" in err and "RTF:" in err and "frames skipped:" in err
    code, out, err = run(["transcribe", "--model", str(tiny_ckpt_dir), *map(str, files)], capsys)
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == list(map(str, files))


def test_jsonl_and_json(tiny_ckpt_dir, files, capsys):
    code, out, _ = run(["transcribe", "--model", str(tiny_ckpt_dir), "--format", "jsonl", "--beam", "4",
                        "--nbest", "2", *map(str, files)], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["path"] for r in rows] == list(map(str, files))
    for r in rows:
        assert {"path", "text", "words", "duration", "top_fraction"} <= set(r)
        assert isinstance(r["text"], str) and isinstance(r["words"], list)
        for w in r["words"]:
            assert set(w) == {"word", "start", "end", "confidence"} and 0 <= w["start"] <= w["end"]
    assert rows[1]["duration"] == pytest.approx(2.0, abs=0.01)
    code, out, _ = run(["transcribe", "--model", str(tiny_ckpt_dir), "--format", "json", *map(str, files)], capsys)
    assert [r["path"] for r in json.loads(out)] == list(map(str, files))


@pytest.mark.parametrize("fmt,head", [("srt", ""), ("vtt", "WEBVTT")])
def test_subtitles(tiny_ckpt_dir, files, tmp_path, capsys, fmt, head):
    out_file = tmp_path / f"one.{fmt}"
    code, _, _ = run(["transcribe", "--model", str(tiny_ckpt_dir), "--format", fmt, "-o", str(out_file),
                      str(files[1])], capsys)
    assert code == 0 and out_file.read_text().startswith(head)
    code, _, err = run(["transcribe", "--model", str(tiny_ckpt_dir), "--format", fmt, *map(str, files)], capsys)
    assert code == 2 and "--output DIR" in err
    out_dir = tmp_path / "new" / "subs"  # made for them
    code, _, _ = run(["transcribe", "--model", str(tiny_ckpt_dir), "--format", fmt, "-o", str(out_dir),
                      *map(str, files)], capsys)
    assert code == 0 and sorted(p.name for p in out_dir.iterdir()) == [f"a.{fmt}", f"b.{fmt}", f"c.{fmt}"]


def test_outputs_are_planned_before_decoding(tiny_ckpt_dir, wav, tmp_path, capsys):
    import shutil

    model = ["transcribe", "--model", str(tiny_ckpt_dir), "--format"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    x1 = wav("a/x.wav", 1.0)
    x2 = shutil.copy(wav("y.wav", 0.5), tmp_path / "b" / "x.wav")
    # a folder where a file is needed: refused at once, nothing decoded
    code, out, err = run([*model, "txt", "-o", str(tmp_path), str(x1)], capsys)
    assert code == 2 and "is a folder" in err and "summary" not in err and out == ""
    # a file in folders that do not exist yet
    target = tmp_path / "deep" / "er" / "x.txt"
    code, _, _ = run([*model, "txt", "-o", str(target), str(x1)], capsys)
    assert code == 0 and target.read_text().count("\n") == 1
    # one subtitle file into a folder named with a trailing slash
    code, _, _ = run([*model, "srt", "-o", f"{tmp_path / 'one'}/", str(x1)], capsys)
    assert code == 0 and [p.name for p in (tmp_path / "one").iterdir()] == ["x.srt"]
    # two inputs with one name keep their folders instead of overwriting each other
    code, _, _ = run([*model, "srt", "-o", str(tmp_path / "subs"), str(x1), str(x2)], capsys)
    assert code == 0
    assert sorted(str(p.relative_to(tmp_path / "subs")) for p in (tmp_path / "subs").rglob("*.srt")) == [
        "a/x.srt", "b/x.srt"]
    code, _, err = run([*model, "srt", "-o", str(tmp_path / "twice"), str(x1), str(x1)], capsys)
    assert code == 2 and "given twice" in err and "summary" not in err


def test_audio_from_stdin_and_failures_leave_stdout_empty(tiny_ckpt_dir, wav, tmp_path, capsys, monkeypatch):
    import io

    data = wav("a.wav", 1.0).read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, err = run(["transcribe", "--model", str(tiny_ckpt_dir), "--format", "jsonl", "-"], capsys)
    assert code == 0 and json.loads(out)["path"] == "-" and json.loads(out)["duration"] == pytest.approx(1.0)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"not audio at all")))
    code, out, err = run(["transcribe", "--model", str(tiny_ckpt_dir), "-"], capsys)
    assert code == 1 and out == "" and "error: -: cannot decode audio" in err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, out, err = run(["transcribe", "--model", str(tiny_ckpt_dir), "-"], capsys)
    assert code == 2 and "nothing on standard input" in err


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"asr-engine {version('asr-engine')}"


def test_serve_on_a_taken_port_is_one_clear_line(tiny_ckpt_dir, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, _, err = run(["serve", "--model", str(tiny_ckpt_dir), "--backend", "torch", "--host", "127.0.0.1",
                            "--port", str(port)], capsys)
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err


def test_serve_with_cuda_graphs_off_cuda_is_one_clear_line(tiny_ckpt_dir, capsys):
    code, _, err = run(["serve", "--model", str(tiny_ckpt_dir), "--backend", "onnx", "--cuda-graphs",
                        "--port", "0"], capsys)
    assert code == 2 and "CUDA graphs need the torch backend on a CUDA device" in err and "Traceback" not in err


def test_subtitle_cues_from_words():
    from asr_engine.decoding import Word
    from asr_engine.formats import to_srt, to_vtt
    from asr_engine.results import Result

    words = [Word("hello", 0.5, 0.9, 0.9), Word("world", 1.0, 1.4, 0.8), Word("again", 4.0, 4.5, 0.7)]
    srt = to_srt(Result("x", "hello world again", words))
    assert srt == ("1\n00:00:00,500 --> 00:00:01,400\nhello world\n\n"
                   "2\n00:00:04,000 --> 00:00:04,500\nagain\n")
    assert to_vtt(Result("x", "", words)).startswith("WEBVTT\n\n00:00:00.500 --> 00:00:01.400\nhello world\n")


def test_subtitle_cues_break_at_pauses_and_limits_not_word_counts():
    from asr_engine.decoding import Word
    from asr_engine.formats import cues

    # 14 short words spoken without a pause: one cue (the old rule cut every 10 words)
    fluent = [Word(f"w{i}", 0.3 * i, 0.3 * i + 0.25, 1.0) for i in range(14)]
    (cue,) = cues(fluent)
    assert cue[:2] == (0.0, 13 * 0.3 + 0.25) and cue[2].replace("\n", " ") == " ".join(f"w{i}" for i in range(14))
    assert all(len(line) <= 42 for line in cue[2].split("\n"))
    # a pause of 0.6 s ends a cue even mid-sentence
    paused = fluent[:5] + [Word(w.word, w.start + 0.6, w.end + 0.6, 1.0) for w in fluent[5:]]
    assert [c[2].split()[0] for c in cues(paused)] == ["w0", "w5"]
    # 11 s of slow speech (65 characters) with no pause of 0.5 s: split where the gap is longest
    long_words = []
    t = 0.0
    for i in range(22):
        long_words.append(Word("ok", t, t + 0.25, 1.0))
        t += 0.5 if i != 8 else 0.7  # gaps of 0.25 s, and one of 0.45 s after word 8
    parts = cues(long_words)
    assert len(parts) == 2 and parts[0][1] == long_words[8].end
    for a, b, text in parts:
        assert b - a <= 7.0 and len(text) <= 84 and all(len(line) <= 42 for line in text.split("\n"))
    # written with punctuation (--punctuate): the same speech is cut after a sentence's end, not at the widest gap
    written = [Word(w.word + ("." if i in (4, 13) else ""), w.start, w.end, 1.0) for i, w in enumerate(long_words)]
    parts = cues(written)
    assert parts[0][1] == written[13].end and parts[0][2].replace("\n", " ").endswith("ok.")
    assert all(b - a <= 7.0 for a, b, _ in parts)


def test_bad_files_are_reported_and_others_finish(tiny_ckpt_dir, files, tmp_path, capsys):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.flac").write_bytes(b"not audio at all" * 50)
    bad = [str(tmp_path / "empty.wav"), str(tmp_path / "junk.flac"), str(tmp_path / "missing.wav")]
    code, out, err = run(["transcribe", "--model", str(tiny_ckpt_dir), "--format", "jsonl",
                          str(files[0]), *bad, str(files[1])], capsys)
    assert code == 1
    rows = [json.loads(line) for line in out.splitlines()]
    assert [("error" in r) for r in rows] == [False, True, True, True, False]
    assert "empty file" in rows[1]["error"] and "cannot decode" in rows[2]["error"]
    assert "no such file" in rows[3]["error"]
    assert err.count("error:") == 3 and "2 ok, 3 failed" in err


def test_dirs_lists_and_manifests(tiny_ckpt_dir, files, tmp_path, capsys):
    code, out, _ = run(["transcribe", "--model", str(tiny_ckpt_dir), "--format", "jsonl", str(tmp_path)], capsys)
    assert code == 0 and len(out.splitlines()) == 3
    (tmp_path / "list.txt").write_text("a.wav\n# a comment\n\nb.wav\n")
    code, out, _ = run(["transcribe", "--model", str(tiny_ckpt_dir), f"@{tmp_path / 'list.txt'}"], capsys)
    assert code == 0 and len(out.splitlines()) == 2
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio": "a.wav", "text": "a tone", "duration": 1.0}) + "\n")
    code, _, err = run(["transcribe", "--model", str(tiny_ckpt_dir), str(tmp_path / "m.jsonl")], capsys)
    assert code == 0 and "WER:" in err
    empty = tmp_path / "nothing"
    empty.mkdir()
    code, _, err = run(["transcribe", "--model", str(tiny_ckpt_dir), str(empty)], capsys)
    assert code == 2 and "no audio files" in err


def test_skip_threshold_option_changes_top_fraction(tiny_ckpt_dir, files, capsys):
    _, off, _ = run(["transcribe", "--model", str(tiny_ckpt_dir), "--format", "jsonl",
                     "--skip-threshold", "1.0", str(files[1])], capsys)
    _, on, _ = run(["transcribe", "--model", str(tiny_ckpt_dir), "--format", "jsonl",
                    "--skip-threshold", "0.0", str(files[1])], capsys)
    assert json.loads(off)["top_fraction"] == 1.0
    assert json.loads(on)["top_fraction"] == 0.0


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu0", "cuda:99", "cuda"])
@pytest.mark.parametrize("command", ["transcribe", "serve", "eval", "lm train"])
def test_a_device_that_cannot_run_is_one_clear_line(tiny_ckpt_dir, files, tmp_path, capsys, command, device):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present: cuda runs")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": str(files[0]), "text": "a", "duration": 1.0}) + "\n")
    model = ["--model", str(tiny_ckpt_dir)]
    argv = {"transcribe": ["transcribe", *model, "--backend", "torch", str(files[0])],
            "serve": ["serve", *model, "--port", "0"],
            "eval": ["eval", str(manifest), *model, "--backend", "torch"],
            "lm train": ["lm", "train", "--text", str(manifest), "--out", str(tmp_path / "lm"), *model]}[command]
    code, out, err = run([*argv, "--device", device], capsys)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    said = ("use cpu, cuda or cuda:N" if ":" not in device and device != "cuda" or device == "cuda:x"
            else "no CUDA GPU" if count == 0 else f"this machine has {count} CUDA GPU")
    assert code == 2 and out == "" and said in err and "Traceback" not in err, err
    assert not (tmp_path / "lm").exists()


def test_the_onnx_backend_leaves_cuda_to_onnx_runtime(files, capsys):
    """onnxruntime-gpu brings CUDA without torch: torch's view of the GPUs does not decide for the onnx backend."""
    import onnxruntime as ort

    from asr_engine.backend import check_device

    assert check_device("cuda:3", "onnx") == "cuda:3" and check_device("cpu") == "cpu"
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime runs on CUDA")
    code, out, err = run(["transcribe", "--backend", "onnx", "--device", "cuda", str(files[0])], capsys)
    assert code == 2 and out == "" and "needs onnxruntime-gpu" in err and "Traceback" not in err, err


@pytest.mark.parametrize("option, value, said", [
    ("--threads", "-1", "-1: must be at least 0"), ("--batch-size", "0", "0: must be at least 1"),
    ("--chunk-frames", "0", "0: must be at least 1"), ("--workers", "0", "0: must be at least 1"),
    ("--skip-threshold", "-0.1", "within [0, 1]"), ("--skip-threshold", "1.5", "within [0, 1]"),
    ("--skip-threshold", "nan", "within [0, 1]"), ("--lm-weight", "nan", "nan: must be a finite number"),
    ("--length-bonus", "inf", "must be a finite number"), ("--lexicon-penalty", "x", "'x' is not a number"),
    ("--hotword-boost", "11", "within [0, 10]"), ("--threads", "two", "'two' is not a whole number"),
    ("stream --chunk-ms", "0", "within [1, 30000]"), ("stream --seconds", "0", "of at least 0.001")])
def test_option_values_that_cannot_work_are_refused_as_they_are_read(files, capsys, option, value, said):
    """A negative thread count was a RuntimeError traceback; a skip threshold of 2 or NaN (NaN skipped every
    frame), a NaN LM weight and a chunk of 0 frames were taken and silently changed what decoding did."""
    command, _, option = option.rpartition(" ")
    with pytest.raises(SystemExit) as e:
        main([command or "transcribe", str(files[0]), option, value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and (f"argument {option}: {value}" in err or f"argument {option}: '{value}'" in err)
    assert said in err and "Traceback" not in err


@pytest.mark.parametrize("option, value", [("--port", "70000"), ("--port", "-1"), ("--max-sessions", "0"),
                                           ("--max-sessions-per-peer", "0"), ("--max-message-bytes", "0"),
                                           ("--idle-timeout", "nan"), ("--drain-seconds", "-1"),
                                           ("--batch-deadline-ms", "inf"), ("--max-total-backlog-seconds", "0"),
                                           ("--batch-size", "0")])
def test_server_limits_that_cannot_work_are_refused_before_the_model_loads(capsys, monkeypatch, option, value):
    """A batch of 0 sessions started a server that never stepped; a port past 65535 was an OverflowError
    traceback from the socket layer."""
    import asr_engine.backend

    def no_model(*a, **k):
        raise AssertionError("the model loaded before the limits were checked")

    monkeypatch.setattr(asr_engine.backend, "load_model", no_model)
    try:
        code = main(["serve", option, value])
    except SystemExit as e:  # argparse's own refusals (a type it checks as it reads)
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and option in err and value in err and "Traceback" not in err, err


@pytest.mark.parametrize("given, said", [
    ({"--tls-cert": "missing/tls_cert.pem"}, "--tls-cert missing/tls_cert.pem: no such file"),  # a path as given
    ({"--tls-key": "key"}, "key.pem: goes with a certificate, --tls-cert"),
    ({"--tls-cert": "cert"}, "with its private key in the same file (a key in a file of its own is --tls-key)"),
    ({"--tls-cert": "key"}, "not a PEM certificate with its private key in the same file"),
    ({"--tls-cert": "cert", "--tls-key": "other_key"}, "other_key.pem: not the private key of"),
    ({"--tls-cert": "cert", "--tls-key": "encrypted_key"}, "the private key is encrypted; give it unencrypted"),
])
def test_tls_files_that_cannot_serve_are_refused_before_the_model_loads(tls_files, capsys, monkeypatch, given, said):
    """A certificate, a key or the pair that cannot serve is one line before the model loads; an encrypted key
    is refused, not asked for on the terminal (OpenSSL's prompt would wait there)."""
    import asr_engine.backend

    def no_model(*a, **k):
        raise AssertionError("the model loaded before the TLS files were checked")

    monkeypatch.setattr(asr_engine.backend, "load_model", no_model)
    argv = ["serve"]
    for option, name in given.items():
        argv += [option, getattr(tls_files, name, name)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and said in err and "Traceback" not in err, err


def test_stream_tls_options_that_cannot_work_are_one_line(tls_files, files, capsys):
    assert main(["stream", str(files[0]), "--url", "ws://127.0.0.1:9/", "--ca-file", tls_files.ca]) == 2
    assert "--ca-file goes with a wss:// URL" in capsys.readouterr().err
    assert main(["stream", str(files[0]), "--url", "wss://127.0.0.1:9/", "--ca-file", str(files[0])]) == 2
    assert "not a readable PEM certificate file" in capsys.readouterr().err


def test_server_config_refuses_limits_that_cannot_work():
    from asr_engine.server.app import ServerConfig

    assert ServerConfig().batch_size == 32 and ServerConfig(port=0, idle_timeout=1.0).port == 0
    for bad in ({"batch_size": 0}, {"port": 65536}, {"idle_timeout": float("nan")}, {"max_sessions": 2.5},
                {"min_audio_fraction": 1.5}, {"shutdown_grace": -1.0}, {"step_audio_seconds": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServerConfig(**bad)


def test_help_documents_every_option():
    sub = build_parser()._subparsers._group_actions[0].choices["transcribe"]
    text = sub.format_help()
    for action in sub._actions:
        for opt in action.option_strings:
            assert opt in text
        assert action.help, action.dest
    top = subprocess.run([sys.executable, "-m", "asr_engine.cli", "--help"], capture_output=True, text=True)
    assert top.returncode == 0 and "transcribe" in top.stdout


def test_audio_shorter_than_one_encoder_frame_gives_empty_text(tmp_path):
    """x8 subsampling needs 15 feature frames (0.16 s); shorter audio is empty text, not a crash."""
    import numpy as np
    import torch

    from asr_engine.checkpoint import Checkpoint
    from asr_engine.model.encoder import Encoder
    from asr_engine.tokenizer import CharTokenizer
    from asr_engine.engine import Engine

    from conftest import tiny_config

    torch.manual_seed(0)
    t = Engine(Checkpoint(Encoder(tiny_config(subsampling=8)).eval(), CharTokenizer()))
    short, ok = np.zeros(int(0.12 * 16000), np.float32), np.zeros(int(0.2 * 16000), np.float32)
    (alone,) = t.transcribe_arrays([short], ["short"])
    assert alone.text == "" and alone.frames == 0 and alone.error is None
    res = t.transcribe_arrays([short, ok], ["short", "ok"])
    assert res[0].text == "" and res[0].frames == 0 and res[0].error is None
    assert res[1].frames == 1


def test_folders_take_video_and_m4a_files_and_name_what_they_skip(tiny_ckpt_dir, wav, tmp_path, capsys):
    from conftest import tone
    from test_audio import write_with_ffmpeg

    folder = tmp_path / "media"
    folder.mkdir()
    write_with_ffmpeg(folder / "talk.m4a", "mp4", "aac", tone(1.0, 44100, channels=2), 44100)
    write_with_ffmpeg(folder / "clip.webm", "webm", "libopus", tone(0.5, 48000, channels=2), 48000, video=True)
    (folder / "notes.txt").write_text("not audio")
    code, out, err = run(["transcribe", "--model", str(tiny_ckpt_dir), "--format", "jsonl", str(folder)], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and sorted(r["path"].rsplit("/", 1)[1] for r in rows) == ["clip.webm", "talk.m4a"]
    assert all("error" not in r and r["duration"] > 0.4 for r in rows)
    assert "skipping 1 file(s) that are not audio or video (notes.txt)" in err


def test_one_long_file_shows_its_progress_in_seconds_of_audio(tiny_ckpt_dir, wav, capsys):
    path = wav("long.wav", 40.0)
    code, out, err = run(["transcribe", "--model", str(tiny_ckpt_dir), "--backend", "torch", "--streaming",
                          str(path)], capsys)
    assert code == 0 and out.count("\n") == 1
    assert "audio:" in err and "40/40" in err  # tqdm's bar, in seconds, ran to the end
    code, _, err = run(["transcribe", "--model", str(tiny_ckpt_dir), "--backend", "torch", "--streaming", "-q",
                        str(path)], capsys)
    assert code == 0 and "audio:" not in err


def test_engine_reports_progress_up_to_the_total(tiny_ckpt_dir, wav):
    from asr_engine.checkpoint import load_checkpoint
    from asr_engine.engine import Engine

    engine = Engine(load_checkpoint(tiny_ckpt_dir))
    seen = []
    engine.transcribe_files([str(wav("a.wav", 3.0)), str(wav("b.wav", 1.0))], progress=lambda d, t: seen.append((d, t)),
                            streaming=True)
    assert seen and all(t == 4.0 for _, t in seen)
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == 4.0


def test_a_truncated_wav_is_transcribed_with_a_warning(tiny_ckpt_dir, wav, tmp_path, capsys):
    import soundfile as sf

    from conftest import tone

    path = tmp_path / "cut.wav"
    sf.write(path, tone(2.0), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[: 44 + 16000])
    code, out, err = run(["transcribe", "--model", str(tiny_ckpt_dir), "--format", "jsonl", str(path)], capsys)
    row = json.loads(out)
    assert code == 0 and "error" not in row and "truncated: 1.50 s" in row["warning"]
    assert f"warning: {path}: truncated" in err


def test_the_clis_copies_of_the_choices_are_their_sources():
    """cli.py names backends, layouts and precisions without importing the modules that define them (torch for
    --help); they must not drift apart."""
    from asr_engine import backend, cli
    from asr_engine.export import runtime
    from asr_engine.lm import fusion
    from asr_engine.model import config

    assert cli.BACKENDS == backend.BACKENDS and cli.CONTEXTS == config.CONTEXTS
    assert cli.PRECISIONS == runtime.PRECISIONS and cli.LM_PRECISIONS == fusion.PRECISIONS
