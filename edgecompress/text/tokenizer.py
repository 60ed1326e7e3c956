"""The word-level tokenizer text models use: pure Python, so a Raspberry Pi turns text into the same ids.

Tokenizing is lower-casing, then splitting into words (letters and digits, with an apostrophe suffix such
as "n't" or "'s" kept on the word) and single punctuation marks. A vocabulary file lists one token per
line; a token's id is its line number. Line 0 is the padding token and line 1 the unknown-word token, so
id 0 pads a short text to the model's fixed sequence length and id 1 stands for any word not listed.
No TensorFlow text op is involved: the .tflite takes int32 ids, and this module (or the ten lines it takes
in any language) makes them beside it on the device, from the vocabulary file shipped with the model.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edgecompress.errors import UserError
from edgecompress.fileio import write_bytes_atomic

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?|[^\w\s]")


def words(text: str) -> list[str]:
    """TEXT lower-cased and split into words and punctuation marks."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Vocabulary:
    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.tokens[:2] != (PAD, UNK):
            raise UserError(f"a vocabulary must start with {PAD} and {UNK} on its first two lines: "
                            "rebuild it with build_vocabulary")
        object.__setattr__(self, "_ids", {t: i for i, t in enumerate(self.tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: Sequence[str], seq_len: int) -> np.ndarray:
        """int32 ids (len(TEXTS), SEQ_LEN): each text's first SEQ_LEN tokens, padded with PAD_ID."""
        ids = np.full((len(texts), seq_len), PAD_ID, dtype=np.int32)
        lookup = self._ids  # type: ignore[attr-defined]
        for row, text in enumerate(texts):
            found = [lookup.get(w, UNK_ID) for w in words(text)[:seq_len]]
            ids[row, : len(found)] = found
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The tokens of IDS joined by spaces, padding left out (for reading, not a round trip)."""
        return " ".join(self.tokens[i] for i in ids if i != PAD_ID)

    def save(self, path: str | Path) -> Path:
        return write_bytes_atomic(path, ("\n".join(self.tokens) + "\n").encode("utf-8"))


def load_vocabulary(path: str | Path) -> Vocabulary:
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read vocabulary {p} ({exc}): give the vocab.txt written beside the model") from exc
    return Vocabulary(tuple(lines[:-1] if lines and lines[-1] == "" else lines))


def build_vocabulary(texts: Iterable[str], max_size: int, min_count: int = 2) -> Vocabulary:
    """The MAX_SIZE - 2 most frequent words of TEXTS seen at least MIN_COUNT times, after PAD and UNK
    (ties broken alphabetically, so the same texts always give the same file)."""
    counts = Counter(w for text in texts for w in words(text))
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return Vocabulary((PAD, UNK, *kept[: max_size - 2]))
