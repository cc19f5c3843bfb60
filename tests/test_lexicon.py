"""The lexicon in beam search: a penalty, once per word, for spelling that is not a known word;
how it moves hypotheses, that it streams, how an LM folder carries it, and the CLI that writes it."""

import pytest

from asr_engine.decoding import PrefixBeamSearch, prefix_beam_search
from asr_engine.lexicon import Lexicon, build_words, read_words
from asr_engine.tokenizer import CharTokenizer
from test_fusion import bundled_lm, peaky_log_probs, text_log_probs  # noqa: F401 (a fixture)

WORDS = ["the", "cat", "cats", "sat", "on", "a", "mat"]


def walk(lex: Lexicon, tok, text: str) -> tuple[float, float]:
    """(penalties charged token by token, what the end still owes) for `text`."""
    state, paid = ("", False), 0.0
    for t in tok.encode(text):
        state, delta = lex.step(state, t)
        paid += delta
    return paid, lex.final(state)


def test_each_word_outside_the_lexicon_pays_once():
    tok = CharTokenizer()
    lex = Lexicon(WORDS, tok, penalty=-3.0)
    assert walk(lex, tok, "the cat sat on a mat") == (0.0, 0.0)
    assert walk(lex, tok, "the cats") == (0.0, 0.0)
    # "kat": no known word starts with "k"; charged at the "k", not again at "a" or "t"
    assert walk(lex, tok, "the kat") == (-3.0, 0.0)
    assert walk(lex, tok, "the kat sat zzz") == (-6.0, 0.0)
    # "ca" is the start of known words but not a word: charged when the word ends
    assert walk(lex, tok, "ca sat") == (-3.0, 0.0)
    assert walk(lex, tok, "the ca") == (0.0, -3.0)  # the hypothesis ends inside it
    assert walk(lex, tok, "th") == (0.0, -3.0)


def test_subword_tokens_start_words_where_their_piece_does():
    from asr_engine.checkpoint import load_checkpoint

    tok = load_checkpoint("asr_engine/models/default").tokenizer  # BPE: "▁" starts a word
    words = ["please", "enter", "your", "conference", "number"]
    lex = Lexicon(words, tok, penalty=-2.0)
    assert walk(lex, tok, "please enter your conference number") == (0.0, 0.0)
    assert walk(lex, tok, "please enter your comference number") == (-2.0, 0.0)
    assert walk(lex, tok, "please enter your conferenc number") == (-2.0, 0.0)
    # the same word spelt with other pieces than the tokenizer's ("▁con f e ren ce") is the same word
    ids = {p: i for i, p in enumerate(tok.vocab)}
    pieces = [ids[p] for p in ("▁con", "f", "er", "e", "n", "ce")]
    assert pieces != tok.encode("conference")
    state, paid = ("", False), 0.0
    for t in pieces:
        state, delta = lex.step(state, t)
        paid += delta
    assert paid == 0.0 and lex.final(state) == 0.0


def test_the_lexicon_moves_a_near_miss_to_the_word():
    tok = CharTokenizer()
    # the acoustics favour "the kat" (k 0.5, c 0.45)
    lp = text_log_probs(tok, "the cat sat", {len(tok.encode("the c")) - 1: {"k": 0.5, "c": 0.45}})
    assert tok.decode(list(prefix_beam_search(lp, beam=8)[0].tokens)) == "the kat sat"
    lex = Lexicon(WORDS, tok, penalty=-3.0)
    best = prefix_beam_search(lp, beam=8, lexicon=lex)[0]
    assert tok.decode(list(best.tokens)) == "the cat sat"
    # a word the lexicon lacks still wins where the acoustics are sure of it
    lp = text_log_probs(tok, "the dog sat")
    assert tok.decode(list(prefix_beam_search(lp, beam=8, lexicon=lex)[0].tokens)) == "the dog sat"
    # a small penalty does not outweigh the acoustics
    weak = Lexicon(WORDS, tok, penalty=-0.01)
    lp = text_log_probs(tok, "the cat sat", {len(tok.encode("the c")) - 1: {"k": 0.5, "c": 0.45}})
    assert tok.decode(list(prefix_beam_search(lp, beam=8, lexicon=weak)[0].tokens)) == "the kat sat"


def test_a_stream_with_a_lexicon_decodes_as_the_whole_utterance():
    tok = CharTokenizer()
    lex = Lexicon(WORDS + ["tea", "eat", "ate", "at"], tok, penalty=-1.5)
    lp = peaky_log_probs(120, len(tok.vocab), seed=3)
    whole = prefix_beam_search(lp, beam=6, nbest=6, lexicon=lex)
    assert [h.tokens for h in whole] != [h.tokens for h in prefix_beam_search(lp, beam=6, nbest=6)]
    s = PrefixBeamSearch(6, lexicon=lex)
    for a in range(0, 120, 7):
        s.advance(lp[a: a + 7])
    assert s.hypotheses(6) == whole


def test_an_lm_folder_carries_its_lexicon(bundled_lm, tmp_path):  # noqa: F811 (the fixture)
    from asr_engine.checkpoint import load_checkpoint
    from asr_engine.cli import main
    from asr_engine.engine import DecodeOptions, Engine
    from asr_engine.lm.fusion import load_fusion

    tok = load_checkpoint(None).tokenizer
    assert load_fusion(bundled_lm, tok, backend="torch").lexicon is None  # no lexicon.txt: none
    with pytest.raises(ValueError, match="no lexicon"):
        load_fusion(bundled_lm, tok, backend="torch", lexicon_penalty=-2.0)
    lm = tmp_path / "lm"
    lm.mkdir()
    for f in bundled_lm.iterdir():
        (lm / f.name).write_bytes(f.read_bytes())
    text = tmp_path / "text.txt"
    text.write_text("Please enter your conference number.\nThe cat sat on the mat\n")
    assert main(["lm", "lexicon", str(lm), "--text", str(text)]) == 0
    assert read_words(lm / "lexicon.txt") == sorted({"please", "enter", "your", "conference", "number", "the",
                                                     "cat", "sat", "on", "mat"})
    fusion = load_fusion(lm, tok, backend="torch")
    assert fusion.lexicon is not None and fusion.lexicon.penalty == -4.0 and len(fusion.lexicon) == 10
    assert load_fusion(lm, tok, backend="torch", lexicon_penalty=-1.0).lexicon.penalty == -1.0
    assert load_fusion(lm, tok, backend="torch", lexicon_penalty=0.0).lexicon is None
    # beam search takes the LM's lexicon: with a tiny lexicon every sample word is charged, and the
    # decoded text changes against the same LM without it
    samples = [f"asr_engine/samples/sample{i}.wav" for i in (1, 2, 3)]
    ckpt = load_checkpoint(None)
    off = Engine(ckpt, DecodeOptions(beam=4, lm=load_fusion(lm, tok, 0.5, 1.0, "torch", lexicon_penalty=0.0)))
    on = Engine(ckpt, DecodeOptions(beam=4, lm=load_fusion(lm, tok, 0.5, 1.0, "torch", lexicon_penalty=-20.0)))
    a, b = off.transcribe_files(samples), on.transcribe_files(samples)
    assert [r.text for r in a] != [r.text for r in b]
    known = set(read_words(lm / "lexicon.txt"))
    assert sum(w in known for r in b for w in r.text.split()) >= sum(w in known for r in a for w in r.text.split())


def test_lexicon_errors(tmp_path, capsys):
    from asr_engine.cli import main

    tok = CharTokenizer()
    with pytest.raises(ValueError, match="<= 0"):
        Lexicon(WORDS, tok, penalty=1.0)
    with pytest.raises(ValueError, match="at least one word"):
        Lexicon([], tok)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_words(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="no words"):
        read_words(tmp_path / "empty.txt")
    # the CLI refuses a folder that is not an LM's, with a message and no traceback
    (tmp_path / "t.txt").write_text("a b c\n")
    assert main(["lm", "lexicon", str(tmp_path), "--text", str(tmp_path / "t.txt")]) != 0
    assert "lm.json" in capsys.readouterr().err


def test_wordfreq_words_join_the_texts():
    pytest.importorskip("wordfreq")
    words = build_words(["Zyzzyvas hum."], wordfreq_top=2000)
    assert {"zyzzyvas", "hum", "the", "people"} <= set(words)
    assert all(w.replace("'", "").isalpha() and w.isascii() and w == w.lower() for w in words)
    assert words == sorted(set(words))


def test_a_lexicon_file_is_read_normalised(tmp_path):
    f = tmp_path / "words.txt"
    f.write_text("cat\nDon't\n  Dog  \ncafé\ntwo words\n\ndon't\n42\n")
    # already normal lines are taken as they are, others normalised; what normalises to several
    # words ("two words", "42": "forty two") is not a word
    assert read_words(f) == ["cafe", "cat", "dog", "don't"]


def test_hotwords_are_words_to_the_lexicon():
    from asr_engine.context import ContextGraph

    tok = CharTokenizer()
    lex = Lexicon(WORDS, tok, penalty=-6.0)
    graph = ContextGraph.from_phrases(["zork mat"], tok, boost=1.5)
    assert graph.words == {"zork", "mat"}
    known = lex.with_words(graph.words)
    assert walk(known, tok, "the zork sat") == (0.0, 0.0) and walk(known, tok, "the zo") == (0.0, -6.0)
    assert walk(lex, tok, "the zork sat") == (-6.0, 0.0)  # the lexicon itself is unchanged
    assert known.with_words(["zork"]).extra == ("zork",) and lex.with_words(["cat"]) is lex
    # acoustics that half hear "zat" (z 0.4 against c 0.5, and "cat" is a known word): the hotword's
    # boost wins it, and the lexicon, which has never heard of zat, does not take it back
    lp = text_log_probs(tok, "the zat sat", {len(tok.encode("the z")) - 1: {"z": 0.4, "c": 0.5}})
    assert tok.decode(list(prefix_beam_search(lp, beam=8)[0].tokens)) == "the cat sat"
    hot = ContextGraph.from_phrases(["zat"], tok, boost=1.5)
    assert tok.decode(list(prefix_beam_search(lp, beam=8, context=hot)[0].tokens)) == "the zat sat"
    assert tok.decode(list(prefix_beam_search(lp, beam=8, context=hot, lexicon=lex)[0].tokens)) == "the zat sat"
    # without the exemption the penalty (6) outweighs the boost: the same search with the bare lexicon
    # loses the hotword
    s = PrefixBeamSearch(8, context=hot, lexicon=lex)
    assert "zat" in s.lexicon.known and "zat" not in lex.known
    s.lexicon = lex
    s.advance(lp)
    assert tok.decode(list(s.hypotheses(1)[0].tokens)) == "the cat sat"
