"""Install Debian packages that tests and benchmark scripts need (CI runs as root on a clean machine).

Tests must not skip for a missing dependency, so they install it: with apt-get when root, else they fail with
the command to run. The product itself never installs anything as root.
"""
from __future__ import annotations

import os
import shutil
import subprocess


def ensure_packages(packages: list[str]) -> None:
    if not packages:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"needs {' '.join(packages)}: run `sudo apt-get install {' '.join(packages)}` first")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if subprocess.run(["apt-get", "install", "-y", "-q", *packages], **quiet).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True, **quiet)  # a clean machine has no package lists
        subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, **quiet)
