"""Regenerate edgecompress/data/digits.npz from the UCI digits set that scikit-learn ships.

The file is committed (about 30 KB) so that neither the package nor its tests need scikit-learn or a
download: run this only to rebuild it. Pixels are kept as uint8 in 0..16, as in the source.
"""
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

out = Path(__file__).resolve().parents[1] / "edgecompress" / "data" / "digits.npz"
digits = load_digits()
np.savez_compressed(out, images=digits.images.astype(np.uint8), labels=digits.target.astype(np.uint8))
print(f"wrote {out} ({out.stat().st_size} bytes, {len(digits.target)} images)")
