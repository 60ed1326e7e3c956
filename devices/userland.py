"""A device's own software stack (its OS userland, Python and TFLite runtime) on this host, under QEMU.

Raspberry Pi OS is Debian with the Pi's Python; a minimal root of that Debian release for the device's
architecture (debootstrap, unpacked without chroot or binfmt) and the runtime's wheels for that architecture
and Python are cached once per userland and runtime in $EDGECOMPRESS_CACHE/userland (default
~/.cache/edgecompress). The guest Python runs under qemu-user with the real ARM kernels, so loading, operator
support and outputs are the device's; its wall time is instruction translation and is never reported.

Nothing is installed as root here: missing host tools are named with the package that provides them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgecompress.devices.profiles import UserlandSpec as Userland
from edgecompress.devices.references import cache_root
from edgecompress.errors import UserError
from edgecompress.progress import note

# qemu binary and wheel platform tags per Debian architecture.
ARCHES = {
    "arm64": ("qemu-aarch64-static", ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64",
                                      "manylinux_2_34_aarch64"]),
}
TOOLS = (("qemu-aarch64-static", "qemu-user-static"), ("debootstrap", "debootstrap"), ("dpkg", "dpkg"))
# tflite-runtime's last release (2.14) is built against numpy 1.x: with numpy 2 its Interpreter fails.
RUNTIME_DEPS = {"ai-edge-litert": ["numpy"], "tflite-runtime": ["numpy<2"]}
RUNTIME_MODULES = {"ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime"}
GUEST_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class RuntimeSpec:
    name: str  # ai-edge-litert | tflite-runtime
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def parse_runtime(spec: str) -> RuntimeSpec:
    """NAME==VERSION for a runtime that has wheels for the guest (ai-edge-litert, tflite-runtime)."""
    name, sep, version = spec.partition("==")
    if not sep or name not in RUNTIME_DEPS or not version.strip():
        raise UserError(f"runtime {spec!r} must be NAME==VERSION with NAME one of {', '.join(RUNTIME_DEPS)}, "
                        "e.g. ai-edge-litert==2.3.0 or tflite-runtime==2.14.0")
    return RuntimeSpec(name, version.strip())


def userland_dir(userland: Userland) -> Path:
    return cache_root() / "userland" / f"debian-{userland.suite}-{userland.arch}"


def missing_tools() -> list[str]:
    """The Debian packages to install for the emulation (none when everything is here)."""
    return sorted({pkg for tool, pkg in TOOLS if shutil.which(tool) is None})


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise UserError(f"running the device's userland needs {', '.join(missing)}: install with "
                        f"`sudo apt-get install {' '.join(missing)}` (edgecompress installs nothing as root itself)")


def debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (deb822 .sources files), else deb.debian.org."""
    sources = Path("/etc/apt/sources.list.d")
    for source in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for line in source.read_text().splitlines():
            if line.startswith("URIs:"):
                uri = line.split(":", 1)[1].split()[0]
                if uri.rstrip("/").endswith("/debian"):
                    return uri
    return "http://deb.debian.org/debian"


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join(ln for ln in proc.stderr.splitlines()[-3:] if ln.strip())
        raise UserError(f"{what} failed ({tail or f'exit {proc.returncode}'}): check the network and retry")


def ensure_rootfs(userland: Userland) -> Path:
    """The userland's root folder (about 235 MB for bookworm arm64), made once."""
    root = userland_dir(userland) / "root"
    if (root / "usr/bin" / f"python{userland.python}").exists():
        return root
    require_tools()
    # Built beside its final place and renamed, so an interrupted download never looks finished.
    partial = root.with_name("root.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    mirror = debian_mirror()
    note(f"fetching a minimal {userland.os} userland ({userland.suite} {userland.arch}, about 235 MB) from {mirror}; once")
    _run(["debootstrap", "--foreign", f"--arch={userland.arch}", "--variant=minbase", "--include=python3",
          userland.suite, str(partial), mirror], "debootstrap")
    # No binfmt or chroot needed: unpack the packages instead of running debootstrap's second stage.
    for deb in sorted((partial / "var/cache/apt/archives").glob("*.deb")):
        _run(["dpkg", "-x", str(deb), str(partial)], f"unpacking {deb.name}")
    shutil.rmtree(partial / "var/cache/apt/archives", ignore_errors=True)
    partial.rename(root)
    return root


def write_pi_cpuinfo(root: Path, cores: int) -> None:
    """A Raspberry Pi 4 /proc/cpuinfo (Cortex-A72) inside ROOT.

    qemu-user shows the guest the host's x86 /proc/cpuinfo, and XNNPACK's cpuinfo library then dereferences a
    null pointer while creating the interpreter (SIGSEGV). `qemu -L ROOT` opens ROOT/PATH in place of PATH when
    it exists, so this file is what the guest reads.
    """
    core = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
            "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n")
    text = "\n".join(core.format(i=i) for i in range(cores))
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(f"{text}\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n")


def ensure_site(userland: Userland, runtime: RuntimeSpec) -> Path:
    """The runtime's wheels for the userland's architecture and Python, unpacked once into a PYTHONPATH folder."""
    site = userland_dir(userland) / f"site-{runtime.name}-{runtime.version}"
    if (site / RUNTIME_MODULES[runtime.name]).is_dir():
        return site
    _, platforms = ARCHES[userland.arch]
    py = userland.python.replace(".", "")
    wheels = site.with_name(site.name + ".wheels")
    note(f"downloading {runtime.requirement} wheels for {userland.arch} Python {userland.python}; once")
    _run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--only-binary=:all:",
          "--python-version", userland.python, "--implementation", "cp", "--abi", f"cp{py}",
          *[arg for p in platforms for arg in ("--platform", p)], "-d", str(wheels),
          runtime.requirement, *RUNTIME_DEPS[runtime.name]], f"downloading {runtime.requirement} for {userland.arch}")
    partial = site.with_name(site.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(partial)
    shutil.rmtree(wheels, ignore_errors=True)
    partial.rename(site)
    return site


# Runs inside the guest with nothing but the runtime: the given inputs (tensor index -> samples) one sample per
# inference, outputs saved the same way.
GUEST = """
import json, platform, sys
import numpy as np
import importlib
name, model, feeds, out, threads = sys.argv[1:6]
mod = importlib.import_module({modules!r}[name] + ".interpreter")
outs = {{}}
try:
    it = mod.Interpreter(model_path=model, num_threads=int(threads))
    it.allocate_tensors()
    data = np.load(feeds)
    count = len(data[f"t{{it.get_input_details()[0]['index']}}"])
    for s in range(count):
        for d in it.get_input_details():
            it.set_tensor(d["index"], data[f"t{{d['index']}}"][s])
        it.invoke()
        for d in it.get_output_details():
            outs.setdefault(f"t{{d['index']}}", []).append(it.get_tensor(d["index"]).copy())
except Exception as exc:
    print(json.dumps({{"error": " ".join(str(exc).split())}}))
    sys.exit(0)
np.savez(out, **{{k: np.stack(v) for k, v in outs.items()}})
print(json.dumps({{"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__}}))
""".format(modules=RUNTIME_MODULES)


@dataclass(frozen=True)
class GuestRun:
    machine: str
    python: str
    numpy: str
    error: str | None = None
    crashed: bool = False  # the runtime died inside the model (a signal), rather than refusing it


def guest_python(userland: Userland, runtime: RuntimeSpec, extra_paths: Sequence[Path] = (),
                 argv0: str | None = None) -> list[str]:
    """The command that starts the userland's Python with RUNTIME (and EXTRA_PATHS) importable, made ready once.

    ARGV0 becomes the guest's sys.executable: a wrapper script that runs this command lets the guest start
    child Pythons of its own (as the benchmark harness does) without binfmt.
    """
    require_tools()
    root = ensure_rootfs(userland)
    write_pi_cpuinfo(root, os.cpu_count() or 1)
    site = ensure_site(userland, runtime)
    qemu, _ = ARCHES[userland.arch]
    path = ":".join(str(p) for p in (*extra_paths, site))
    # -cpu cortex-a72: the Pi 4's instruction set (no dot product), so XNNPACK picks the kernels a Pi 4 runs.
    return [qemu, "-cpu", "cortex-a72", "-L", str(root), *(["-0", argv0] if argv0 else []),
            "-E", f"PYTHONPATH={path}", "-U", "PYTHONHOME", str(root / "usr/bin" / f"python{userland.python}"), "-s"]


def run_in_userland(userland: Userland, runtime: RuntimeSpec, model: Path, feeds: Path, out: Path,
                    threads: int = 1) -> GuestRun:
    """MODEL on FEEDS (.npz: input tensor index "t<i>" -> samples) inside the userland, one inference per
    sample; the outputs to OUT (.npz, keyed the same way by output tensor index)."""
    cmd = guest_python(userland, runtime) + ["-c", GUEST, runtime.name, str(model.resolve()), str(feeds.resolve()),
                                             str(out.resolve()), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=GUEST_TIMEOUT_S, cwd=str(out.parent))
    lines = proc.stdout.strip().splitlines()
    if proc.returncode < 0:  # the runtime crashed on the model: a finding about the device, not our failure
        return GuestRun("", "", "", error=f"the runtime crashed (signal {-proc.returncode})", crashed=True)
    if proc.returncode != 0 or not lines:
        tail = " | ".join(ln for ln in proc.stderr.splitlines()[-3:] if ln.strip())
        raise UserError(f"the emulated {userland.os} failed to start Python ({tail or f'exit {proc.returncode}'}): "
                        f"remove {userland_dir(userland)} to rebuild it")
    data = json.loads(lines[-1])
    if "error" in data:
        return GuestRun("", "", "", error=data["error"])
    return GuestRun(**data)
