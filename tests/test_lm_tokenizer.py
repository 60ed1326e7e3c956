"""The language models' byte-level BPE (edgecompress/text/bpe.py): learned reproducibly from the bundled text,
exact on text it never saw, and read identically by Hugging Face's own tokenizers library from its tokenizer.json
(what LiteRT-LM's runtime reads)."""
from __future__ import annotations

import pytest

from edgecompress.errors import UserError
from edgecompress.text.bpe import BPETokenizer, load_tokenizer, train_bpe
from edgecompress.text.data import load_raw_texts


@pytest.fixture(scope="module")
def texts():
    raw = load_raw_texts()
    return [r.text for r in raw if r.split == "train"], [r.text for r in raw if r.split != "train"]


@pytest.fixture(scope="module")
def tokenizer(texts) -> BPETokenizer:
    return train_bpe(texts[0], 768)


def test_training_is_reproducible_and_compresses(texts, tokenizer):
    again = train_bpe(texts[0], 768)
    assert again.merges == tokenizer.merges and again.vocab == tokenizer.vocab and tokenizer.size == 768
    held = texts[1]
    tokens = sum(len(tokenizer.encode(t)) for t in held)
    assert sum(len(t.encode("utf-8")) for t in held) / tokens > 2.2  # bytes per token (1 without merges): the merges do work


def test_decode_inverts_encode_on_text_it_never_saw(texts, tokenizer):
    unseen = texts[1] + ["Café déjà vu — naïve 日本語 emoji 🎬, tabs\tand  double  spaces\n"]
    for text in unseen:
        assert tokenizer.decode(tokenizer.encode(text, bos=True, eos=True)) == text


def test_hugging_face_tokenizers_reads_the_file_and_gives_the_same_ids(texts, tokenizer, tmp_path):
    from tokenizers import Tokenizer

    path = tokenizer.save(tmp_path / "tokenizer.json")
    theirs = Tokenizer.from_file(str(path))
    unseen = texts[1][:1500] + ["Café déjà vu — naïve, it's 'quoted' 1999's 3.14"]
    mismatched = [t for t in unseen if theirs.encode(t).ids != tokenizer.encode(t)]
    assert mismatched == []
    assert all(theirs.decode(tokenizer.encode(t)) == t for t in unseen[:200])
    mine = load_tokenizer(path)
    assert mine.vocab == tokenizer.vocab and mine.merges == tokenizer.merges


def test_a_file_that_is_no_bpe_tokenizer_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": {"type": "WordPiece", "vocab": {}}}')
    with pytest.raises(UserError, match="is not a byte-level BPE tokenizer.json"):
        load_tokenizer(bad)
    bad.write_text("not json")
    with pytest.raises(UserError, match="is not a byte-level BPE tokenizer.json"):
        load_tokenizer(bad)
