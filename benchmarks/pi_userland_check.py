"""Run a .tflite on a Raspberry Pi OS userland (Debian bookworm arm64) under QEMU, beside the x86 host.

What this proves: the aarch64 wheels of the runtime side (numpy, click, ai-edge-litert) and edgecompress
install and work on the Pi's Python 3.11, `edgecompress inspect` runs there, and the model loads and gives
the same outputs on the real ARM kernels (XNNPACK's NEON paths) as on x86. What it does NOT give: device
latency. QEMU translates every ARM instruction, so its wall-clock time says nothing about a real Pi.

    /work/venv/bin/python benchmarks/pi_userland_check.py MODEL.tflite [--cache DIR] [--litert 2.3.0]

First run: installs qemu-user-static and debootstrap with apt-get when missing (needs root), fetches a
minimal bookworm arm64 root (about 235 MB from the Debian mirror in /etc/apt/sources.list.d) and the aarch64
wheels; later runs reuse the cache (default ~/.cache/edgecompress/pi-userland). edgecompress itself is
rebuilt from this checkout on every run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path.home() / ".cache" / "edgecompress" / "pi-userland"
SUITE = "bookworm"  # Raspberry Pi OS 12 is Debian bookworm; its Python is 3.11
GUEST_PYTHON = "usr/bin/python3.11"
AARCH64_PLATFORMS = ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64", "manylinux_2_34_aarch64"]

# Runs on both sides (x86 venv, aarch64 under QEMU): one inference with edgecompress's own runtime loader.
CHILD = """
import json, platform, sys, time
import numpy as np
from edgecompress.runtime import load_interpreter
model, feeds, out = sys.argv[1:4]
interpreter, info = load_interpreter(model, num_threads=1)
data = np.load(feeds)
for i, d in enumerate(interpreter.get_input_details()):
    interpreter.set_tensor(d["index"], data[f"in{i}"])
start = time.perf_counter()
interpreter.invoke()
seconds = time.perf_counter() - start
np.savez(out, **{f"out{i}": interpreter.get_tensor(d["index"]) for i, d in enumerate(interpreter.get_output_details())})
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                  "runtime": f"{info.name} {info.version}", "numpy": np.__version__, "invoke_s": seconds}))
"""


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kwargs)


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in (("qemu-aarch64-static", "qemu-user-static"), ("debootstrap", "debootstrap"))
               if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"needs {', '.join(missing)}: run `sudo apt-get install {' '.join(missing)}` first")
    print(f"installing {', '.join(missing)} with apt-get", file=sys.stderr)
    run(["apt-get", "install", "-y", "-q", *missing], stdout=subprocess.DEVNULL)


def debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (deb822 .sources files), else deb.debian.org."""
    for source in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in source.read_text().splitlines():
            if line.startswith("URIs:"):
                uri = line.split(":", 1)[1].split()[0]
                if uri.rstrip("/").endswith("/debian"):
                    return uri
    return "http://deb.debian.org/debian"


def ensure_rootfs(cache: Path) -> Path:
    root = cache / "root"
    if (root / GUEST_PYTHON).exists():
        return root
    # Built beside the final place and renamed, so an interrupted download never looks like a finished root.
    partial = cache / "root.partial"
    shutil.rmtree(partial, ignore_errors=True)
    mirror = debian_mirror()
    print(f"debootstrap {SUITE} arm64 from {mirror} (about 235 MB)", file=sys.stderr)
    run(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", "--include=python3", SUITE,
         str(partial), mirror], stdout=subprocess.DEVNULL)
    # No binfmt or chroot here: unpack the packages instead of running the second stage.
    for deb in sorted((partial / "var/cache/apt/archives").glob("*.deb")):
        run(["dpkg", "-x", str(deb), str(partial)])
    partial.rename(root)
    return root


def write_pi4_cpuinfo(root: Path) -> None:
    """A Raspberry Pi 4 /proc/cpuinfo (Cortex-A72 cores) inside ROOT.

    qemu-user shows the guest the host's x86 /proc/cpuinfo, and XNNPACK's cpuinfo library then dereferences
    a null pointer while creating the interpreter (seen here: SIGSEGV). `qemu -L ROOT` opens ROOT/PATH in
    place of PATH when it exists, so this file is what the guest reads.
    """
    core = (
        "processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n"
    )
    cores = "\n".join(core.format(i=i) for i in range(os.cpu_count() or 1))
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(
        f"{cores}\nHardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n"
    )


def unpack_wheels(wheels: Path, site: Path) -> None:
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)


def ensure_site(cache: Path, litert: str) -> Path:
    """aarch64 wheels of the runtime side, unpacked into a folder the guest puts on PYTHONPATH."""
    site = cache / f"site-litert-{litert}"
    if (site / "ai_edge_litert").is_dir():
        return site
    wheels = cache / f"wheels-litert-{litert}"
    platforms = [arg for p in AARCH64_PLATFORMS for arg in ("--platform", p)]
    print(f"downloading aarch64 wheels: numpy, click, ai-edge-litert=={litert}", file=sys.stderr)
    run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--only-binary=:all:",
         "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", *platforms,
         "-d", str(wheels), "numpy", "click", f"ai-edge-litert=={litert}"])
    partial = cache / f"{site.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    unpack_wheels(wheels, partial)
    partial.rename(site)
    return site


def install_edgecompress(site: Path) -> None:
    """This checkout as a wheel (pure Python), replacing any earlier copy in SITE."""
    with tempfile.TemporaryDirectory() as tmp:
        run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps", "-w", tmp,
             str(REPO)], stdout=subprocess.DEVNULL)
        for old in site.glob("edgecompress*"):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        unpack_wheels(Path(tmp), site)


def make_feeds(model: Path, path: Path, seed: int = 0) -> None:
    """One seeded sample per input, in the input's dtype and range, saved for both sides to read."""
    from edgecompress.tflite_reader import read_model

    rng = np.random.default_rng(seed)
    feeds = {}
    for i, t in enumerate(read_model(model).inputs):
        dtype = np.dtype(t.dtype)
        if dtype.kind == "f":
            feeds[f"in{i}"] = rng.random(t.shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            feeds[f"in{i}"] = rng.integers(info.min, int(info.max) + 1, size=t.shape).astype(dtype)
    np.savez(path, **feeds)


def guest(root: Path, site: Path, *args: str) -> list[str]:
    # -cpu cortex-a72: the Pi 4's instruction set (no dot product), so XNNPACK picks the kernels a Pi 4 runs.
    return ["qemu-aarch64-static", "-cpu", "cortex-a72", "-L", str(root), "-E", f"PYTHONPATH={site}",
            str(root / GUEST_PYTHON), *args]


def one_inference(cmd: list[str], work: Path) -> tuple[dict, float]:
    """Run CHILD through CMD (a python); return its report and the whole process's wall time."""
    start = time.perf_counter()
    done = run(cmd, capture_output=True, text=True, cwd=work)
    return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - start


def compare(x86_out: Path, arm_out: Path) -> list[tuple[str, str, float]]:
    with np.load(x86_out) as a, np.load(arm_out) as b:
        return [(k, str(a[k].dtype), float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))))
                for k in a.files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--litert", default="2.3.0", help="ai-edge-litert version for the aarch64 side")
    args = parser.parse_args()
    model = args.model.resolve()
    args.cache.mkdir(parents=True, exist_ok=True)

    ensure_tools()
    root = ensure_rootfs(args.cache)
    write_pi4_cpuinfo(root)
    site = ensure_site(args.cache, args.litert)
    install_edgecompress(site)

    # The working folder is the cache, never the checkout, whose source tree would shadow the installed copy.
    work = Path(tempfile.mkdtemp(dir=args.cache, prefix="run-"))
    try:
        print(f"== edgecompress inspect {model.name} on arm64 (QEMU) ==")
        inspect_start = time.perf_counter()
        inspected = run(guest(root, site, "-m", "edgecompress", "inspect", str(model)), capture_output=True,
                        text=True, cwd=work)
        inspect_s = time.perf_counter() - inspect_start
        print(inspected.stdout)

        feeds = work / "feeds.npz"
        make_feeds(model, feeds)
        x86, x86_wall = one_inference([sys.executable, "-c", CHILD, str(model), str(feeds), str(work / "x86.npz")], work)
        arm, arm_wall = one_inference(guest(root, site, "-c", CHILD, str(model), str(feeds), str(work / "arm.npz")), work)

        print("== one inference, same seeded input ==")
        for side, rep, wall in (("x86 host", x86, x86_wall), ("arm64 under QEMU", arm, arm_wall)):
            print(f"{side:17s} {rep['machine']:8s} python {rep['python']}  {rep['runtime']}  numpy {rep['numpy']}  "
                  f"invoke {rep['invoke_s'] * 1000:.1f} ms  process {wall:.1f} s")
        for name, dtype, diff in compare(work / "x86.npz", work / "arm.npz"):
            unit = "" if dtype.startswith("float") else " (stored integer steps)"
            print(f"output {name} ({dtype}): max abs diff x86 vs arm64 = {diff:.3g}{unit}")
        print(f"arm64 inspect took {inspect_s:.1f} s under QEMU.")
        print("NOTE: QEMU times are instruction translation, NOT Raspberry Pi latency; use `edgecompress devices`"
              " estimates or a real device for speed.")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
