import pytest

from asr_engine.text import normalize, number_to_words, ordinal_to_words, word_error_counts
from asr_engine.tokenizer import BLANK_ID, CharTokenizer, train_bpe


@pytest.mark.parametrize("text,expected", [
    ("Hello, World!", "hello world"),
    ("Press 1 for sales.", "press one for sales"),
    ("It costs $3.50", "it costs three dollars fifty cents"),
    ("the 21st century", "the twenty first century"),
    ("In 1999 we had 2,500 users", "in nineteen ninety nine we had two thousand five hundred users"),
    ("Don't 'quote' me", "don't quote me"),
    ("rock-n-roll & jazz", "rock n roll and jazz"),
    ("50% off", "fifty percent off"),
    ("Café  naïve", "cafe naive"),
    ("version 2.5", "version two point five"),
    ("...", ""),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_numbers():
    assert number_to_words(0) == "zero"
    assert number_to_words(1205) == "one thousand two hundred five"
    assert number_to_words(3_000_017) == "three million seventeen"
    assert ordinal_to_words(12) == "twelfth" and ordinal_to_words(40) == "fortieth"


def test_char_tokenizer_round_trip():
    tok = CharTokenizer()
    ids = tok.encode("Hello, it's 5 o'clock!")
    assert BLANK_ID not in ids
    assert tok.decode(ids) == "hello it's five o'clock"
    assert tok.decode([BLANK_ID] + ids + [BLANK_ID]) == tok.decode(ids)


def test_bpe_tokenizer_round_trip(tmp_path):
    sents = ["the cat sat on the mat", "a dog barked at the cat", "press one for sales",
             "please hold the line"] * 20
    tok = train_bpe(sents, 40, tmp_path / "bpe")
    assert tok.vocab[0] == "<blank>"
    ids = tok.encode("The cat sat, on the line!")
    assert BLANK_ID not in ids and max(ids) < len(tok.vocab)
    assert tok.decode(ids) == "the cat sat on the line"
    assert any(tok.starts_word(i) for i in ids)


def test_word_error_counts():
    assert word_error_counts("the cat sat", "the cat sat") == (0, 3)
    assert word_error_counts("the cat sat", "a cat sat down") == (2, 3)
    assert word_error_counts("Press 1.", "press one") == (0, 2)


def test_error_counts_agree_with_jiwer():
    import random

    import jiwer

    from asr_engine.text import char_error_counts

    rng = random.Random(0)
    vocab = ["the", "cat", "sat", "on", "a", "mat", "press", "one", "two", "please", "hold"]
    for _ in range(200):
        ref = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 12)))
        hyp = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12)))
        e, n = word_error_counts(ref, hyp)
        assert e / n == jiwer.wer(ref, hyp) if hyp else e == n
        if hyp:
            ce, cn = char_error_counts(ref, hyp)
            assert ce / cn == jiwer.cer(ref, hyp)
