"""The GILR language model: it learns a toy language, stepping equals the whole-sequence pass,
checkpoints round-trip, and `asr-engine lm train` works end to end."""

import json
import random

import pytest
import torch

from asr_engine.lm.model import GILRLanguageModel, LMConfig, load_lm, save_lm, vocab_fingerprint
from asr_engine.lm.train import _encode, perplexity, read_sentences, split_heldout, train_lm
from asr_engine.tokenizer import CharTokenizer


def toy_sentences(n=600, seed=0):
    """A tiny grammar: subject verb object, with agreement the LM can learn."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        subj = rng.choice(["the cat", "a dog", "my bird", "the fox"])
        verb = rng.choice(["sees", "likes", "chases"])
        obj = rng.choice(["the mouse", "a ball", "my hat"])
        out.append(f"{subj} {verb} {obj}")
    return out


def test_step_by_step_equals_the_whole_sequence():
    torch.manual_seed(0)
    m = GILRLanguageModel(LMConfig(vocab_size=29, d_model=32, n_layers=2, dropout=0.0)).eval()
    tokens = torch.randint(0, 29, (3, 12))
    logits, last = m(tokens)
    state = m.initial_state(3)
    for t in range(12):
        lp, state = m.step(tokens[:, t], state)
        torch.testing.assert_close(lp, torch.log_softmax(logits[:, t], -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state, last, atol=1e-5, rtol=1e-5)
    # and a sequence cut in two, with the state carried, equals it whole (streaming)
    first, s1 = m(tokens[:, :5])
    second, s2 = m(tokens[:, 5:], s1)
    torch.testing.assert_close(torch.cat([first, second], 1), logits, atol=1e-5, rtol=1e-5)


def test_lm_learns_a_toy_language(tmp_path):
    tok = CharTokenizer()
    sentences = toy_sentences()
    report = train_lm(sentences, tok, tmp_path / "lm", LMConfig(vocab_size=0, d_model=64, n_layers=1, dropout=0.0),
                      steps=250, batch_tokens=2048, lr=5e-3, warmup=20, heldout_percent=10, eval_every=125,
                      progress=False)
    assert report["heldout_sentences"] > 20 and report["steps"] == 250
    # uniform over 29 symbols is perplexity 29; the toy language is far more predictable
    assert report["history"][-1]["heldout_ppl"] < 1.6 < 29
    m = load_lm(tmp_path / "lm", tokenizer=tok)
    good, bad = _encode(["the cat likes a ball"], tok), _encode(["ball a likes cat the"], tok)
    assert perplexity(m, good) < perplexity(m, bad) / 3


def test_checkpoint_round_trip_and_vocabulary_check(tmp_path):
    tok = CharTokenizer()
    m = GILRLanguageModel(LMConfig(vocab_size=29, d_model=16, n_layers=1, vocab_hash=vocab_fingerprint(tok))).eval()
    save_lm(m, tmp_path / "lm", {"note": "x"})
    back = load_lm(tmp_path / "lm", tokenizer=tok)
    tokens = torch.randint(0, 29, (2, 7))
    torch.testing.assert_close(back(tokens)[0], m(tokens)[0])
    assert json.loads((tmp_path / "lm" / "lm.json").read_text())["info"] == {"note": "x"}

    class Other:
        vocab = ["<blank>", "x", "y"]

    with pytest.raises(ValueError, match="another vocabulary"):
        load_lm(tmp_path / "lm", tokenizer=Other())
    with pytest.raises(FileNotFoundError, match="not an LM folder"):
        load_lm(tmp_path)


def test_text_sources_and_heldout_split(tmp_path):
    (tmp_path / "a.txt").write_text("one line\n\n  two line  \n")
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio": "x.wav", "text": "from a manifest"}) + "\n")
    assert read_sentences([tmp_path / "a.txt", tmp_path / "m.jsonl"]) == ["one line", "two line", "from a manifest"]
    with pytest.raises(FileNotFoundError):
        read_sentences([tmp_path / "missing.txt"])
    sents = [f"sentence {i}" for i in range(1000)] + ["sentence 1"] * 5
    train, held = split_heldout(sents, 5.0)
    assert 20 < len(held) < 90 and not set(train) & set(held)  # duplicates land on one side
    # the same split as `data synth`: a synthesized corpus's held-out sentences never train the LM
    from asr_engine.data.text_sources import is_held_out
    from asr_engine.text import normalize

    assert all(is_held_out(normalize(s), 5.0) for s in held)
    assert not any(is_held_out(normalize(s), 5.0) for s in train)


def test_a_stopped_run_resumes_as_it_would_have_gone_on(tmp_path, monkeypatch):
    import asr_engine.lm.train as lm_train
    from asr_engine.lm.train import STATE_FILE

    tok = CharTokenizer()
    sentences, held = toy_sentences(80), toy_sentences(20, seed=1)
    cfg = LMConfig(vocab_size=0, d_model=32, n_layers=1, dropout=0.2)  # dropout: its masks must resume too
    kw = dict(steps=12, batch_tokens=256, eval_every=4, heldout=held, progress=False)
    whole = train_lm(sentences, tok, tmp_path / "whole", cfg, **kw)
    real_save, calls = lm_train.save_lm, []

    def stop_at_the_second_save(*a, **k):  # as if killed after step 8's save (the state is written first)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_save(*a, **k)

    monkeypatch.setattr(lm_train, "save_lm", stop_at_the_second_save)
    with pytest.raises(KeyboardInterrupt):
        train_lm(sentences, tok, tmp_path / "run", cfg, **kw)
    monkeypatch.setattr(lm_train, "save_lm", real_save)
    assert torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)["step"] == 8
    n_batches = len(lm_train._batches(_encode(split_heldout(sentences, 2.0)[0], tok), 256, random.Random(0)))
    assert 8 % n_batches and n_batches < 8  # it stopped in the middle of an epoch, after a whole one
    resumed = train_lm(sentences, tok, tmp_path / "run", cfg, resume=True, **kw)
    a, b = (load_lm(tmp_path / d, tokenizer=tok).state_dict() for d in ("whole", "run"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit: the same batches, masks and updates
    assert [h["heldout_ppl"] for h in resumed["history"]] == [h["heldout_ppl"] for h in whole["history"]]
    assert resumed["steps"] == 12 and len(resumed["history"]) == 3
    # a finished run resumes to itself; a run with other options or text is refused
    assert train_lm(sentences, tok, tmp_path / "run", cfg, resume=True, **kw)["history"] == resumed["history"]
    with pytest.raises(ValueError, match="another lr"):
        train_lm(sentences, tok, tmp_path / "run", cfg, resume=True, **{**kw, "lr": 1e-3})
    with pytest.raises(ValueError, match="another data"):
        train_lm(sentences[:-1], tok, tmp_path / "run", cfg, resume=True, **kw)
    # without a saved state, --resume starts
    started = train_lm(sentences, tok, tmp_path / "new", cfg, resume=True, **kw)
    assert [h["heldout_ppl"] for h in started["history"]] == [h["heldout_ppl"] for h in whole["history"]]


def test_cli_lm_train(tmp_path, capsys):
    from asr_engine.cli import main

    text = tmp_path / "text.txt"
    text.write_text("\n".join(toy_sentences(300)) + "\n")
    assert main(["lm", "train", "--text", str(text), "--out", str(tmp_path / "lm"), "--steps", "20",
                 "--d-model", "32", "--layers", "1", "--eval-every", "10", "-q"]) == 0
    out = capsys.readouterr().out
    assert "held-out perplexity" in out and (tmp_path / "lm" / "lm.safetensors").is_file()
    meta = json.loads((tmp_path / "lm" / "lm.json").read_text())
    assert meta["info"]["steps"] == 20 and len(meta["info"]["history"]) == 2
    again = ["lm", "train", "--text", str(text), "--out", str(tmp_path / "lm"), "--d-model", "32", "--layers", "1",
             "--eval-every", "10", "-q", "--resume"]
    assert main([*again, "--steps", "20"]) == 0  # finished: resumed to itself
    assert "20 steps" in capsys.readouterr().out
    assert main([*again, "--steps", "30"]) == 2  # another schedule: refused, the run in the folder kept
    assert "another steps" in capsys.readouterr().err and json.loads((tmp_path / "lm" / "lm.json").read_text()) == meta
    assert main(["lm", "train", "--text", str(tmp_path / "none.txt"), "--out", str(tmp_path / "x")]) == 2
    # text with nothing in the held-out bucket needs held-out text of its own
    from asr_engine.lm.train import split_heldout

    train_only = tmp_path / "train_only.txt"
    train_only.write_text("\n".join(split_heldout(toy_sentences(300), 2.0)[0]) + "\n")
    assert main(["lm", "train", "--text", str(train_only), "--out", str(tmp_path / "y"), "--steps", "2", "-q"]) == 2
    assert "no held-out sentences" in capsys.readouterr().err
    assert main(["lm", "train", "--text", str(train_only), "--heldout-text", str(text), "--out", str(tmp_path / "y"),
                 "--steps", "2", "--d-model", "16", "--layers", "1", "-q"]) == 0
