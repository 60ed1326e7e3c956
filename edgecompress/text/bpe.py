"""A byte-level BPE tokenizer for the language models: trained here on the bundled text, saved as a Hugging Face
`tokenizer.json` (the format LiteRT-LM's runtime reads, litert-lm-builder's add_hf_tokenizer), and encoded and
decoded in plain Python, so a device needs neither TensorFlow nor the `tokenizers` library.

The scheme is GPT-2's: text is split into words (a leading space kept with the word), each word's UTF-8 bytes
are written as printable characters (bytes_to_unicode), and learned merges join the most frequent adjacent
pairs. Training is deterministic (ties broken by the pair itself). The split pattern is written into the
tokenizer.json as a `Split` pre-tokenizer, so a runtime splits exactly as this module does.
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from edgecompress.errors import UserError
from edgecompress.fileio import write_text_atomic

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIALS = (PAD, BOS, EOS)  # ids 0, 1, 2
# Contractions, then a word, a number or a run of other symbols, each with its leading space; then spaces.
# Basic constructs only: Python's re and the Oniguruma engine of Hugging Face tokenizers read it alike.
SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z\u00C0-\u024F]+| ?[0-9]+| ?[^\sA-Za-z0-9\u00C0-\u024F]+|\s+(?!\S)|\s+"
_SPLIT = re.compile(SPLIT)


@lru_cache(maxsize=1)
def byte_symbols() -> tuple[str, ...]:
    """GPT-2's printable stand-in for each byte value 0-255 (HF's ByteLevel uses the same table)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return tuple(table[b] for b in range(256))


def _word_symbols(word: str) -> tuple[str, ...]:
    symbols = byte_symbols()
    return tuple(symbols[b] for b in word.encode("utf-8"))


def pretokenize(text: str) -> list[str]:
    return _SPLIT.findall(text)


@dataclass
class BPETokenizer:
    vocab: dict[str, int]  # token (byte symbols) -> id; the specials first
    merges: list[tuple[str, str]]  # in rank order
    _ranks: dict[tuple[str, str], int] = field(init=False, repr=False)
    _tokens: list[str] = field(init=False, repr=False)
    _cache: dict[str, list[int]] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._ranks = {pair: i for i, pair in enumerate(self.merges)}
        self._tokens = [""] * len(self.vocab)
        for token, i in self.vocab.items():
            self._tokens[i] = token
        self._bytes = {s: b for b, s in enumerate(byte_symbols())}

    @property
    def size(self) -> int:
        return len(self.vocab)

    @property
    def bos_id(self) -> int:
        return self.vocab[BOS]

    @property
    def eos_id(self) -> int:
        return self.vocab[EOS]

    def _encode_word(self, word: str) -> list[int]:
        if word in self._cache:
            return self._cache[word]
        parts = list(_word_symbols(word))
        while len(parts) > 1:
            ranked = [(self._ranks.get(pair, len(self._ranks)), i) for i, pair in enumerate(zip(parts, parts[1:]))]
            rank, i = min(ranked)
            if rank == len(self._ranks):
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        ids = [self.vocab[p] for p in parts]
        if len(self._cache) < 100_000:
            self._cache[word] = ids
        return ids

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = [self.bos_id] if bos else []
        for word in pretokenize(text):
            ids += self._encode_word(word)
        return ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Iterable[int]) -> str:
        """The text of IDS; special tokens are left out, and bytes that end mid-character decode as U+FFFD."""
        special = {self.vocab[s] for s in SPECIALS}
        raw = bytes(self._bytes[ch] for i in ids if int(i) not in special for ch in self._tokens[int(i)])
        return raw.decode("utf-8", errors="replace")

    def to_json(self) -> dict:
        """The Hugging Face tokenizer.json document (tokenizers' BPE model, byte-level, this module's split)."""
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [{"id": self.vocab[s], "content": s, "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False, "special": True} for s in SPECIALS],
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": SPLIT}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ]},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": self.vocab, "merges": [f"{a} {b}" for a, b in self.merges]},
        }

    def save(self, path: str | Path) -> Path:
        return write_text_atomic(Path(path), json.dumps(self.to_json(), ensure_ascii=False) + "\n")


def load_tokenizer(path: str | Path) -> BPETokenizer:
    """A tokenizer.json this module wrote (a byte-level BPE); another kind is refused in one line."""
    path = Path(path)
    try:
        model = json.loads(path.read_text(encoding="utf-8"))["model"]
        vocab = {str(k): int(v) for k, v in model["vocab"].items()}
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is not a byte-level BPE tokenizer.json ({exc}): give the tokenizer.json written "
                        "beside the model") from None
    if model.get("type") != "BPE" or any(s not in vocab for s in SPECIALS):
        raise UserError(f"{path} is not a byte-level BPE tokenizer.json with {', '.join(SPECIALS)}: give the "
                        "tokenizer.json written beside the model")
    return BPETokenizer(vocab, merges)  # type: ignore[arg-type]


def train_bpe(texts: Iterable[str], vocab_size: int) -> BPETokenizer:
    """A byte-level BPE of VOCAB_SIZE tokens (3 specials + 256 bytes + merges) learned from TEXTS.

    Pair counts are kept up to date incrementally (only the words holding the merged pair are touched), so a
    thousand merges over the bundled 1.8M characters take seconds."""
    if vocab_size < len(SPECIALS) + 256:
        raise UserError(f"vocab_size {vocab_size} is below {len(SPECIALS) + 256} (the specials and 256 bytes)")
    counts = Counter(w for text in texts for w in pretokenize(text))
    words = [list(_word_symbols(w)) for w in counts]
    freq = list(counts.values())
    pairs: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pairs[pair] += freq[i]
            where[pair].add(i)
    merges: list[tuple[str, str]] = []
    while len(SPECIALS) + 256 + len(merges) < vocab_size and pairs:
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if pairs[best] < 2:
            break
        merges.append(best)
        joined = best[0] + best[1]
        for i in sorted(where.pop(best, ())):
            symbols = words[i]
            for pair in zip(symbols, symbols[1:]):  # this word's pairs before the merge
                pairs[pair] -= freq[i]
                if pairs[pair] <= 0:
                    del pairs[pair]
            out, j = [], 0
            while j < len(symbols):
                if j + 1 < len(symbols) and (symbols[j], symbols[j + 1]) == best:
                    out.append(joined)
                    j += 2
                else:
                    out.append(symbols[j])
                    j += 1
            words[i] = out
            for pair in zip(out, out[1:]):
                pairs[pair] += freq[i]
                where[pair].add(i)
        pairs.pop(best, None)
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for symbol in byte_symbols():
        vocab[symbol] = len(vocab)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return BPETokenizer(vocab, merges)
