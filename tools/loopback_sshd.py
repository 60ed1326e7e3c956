"""A throwaway OpenSSH server on 127.0.0.1 for tests and benchmarks of `benchmark --on ssh://`.

    with loopback_sshd(folder) as server:   # server.url, server.client_config, server.bad_key_config
        ...

Its own host key and client key pair (made here), a free port, loopback only, keys only (no passwords),
host keys checked (StrictHostKeyChecking yes against a known_hosts written here). Debian's openssh-server is
installed with apt-get when sshd is missing and we are root (CI), else the caller is told what to install.
The server is stopped when the block ends.
"""
from __future__ import annotations

import contextlib
import getpass
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from apt_packages import ensure_packages

SSHD = Path("/usr/sbin/sshd")


def ensure_sshd() -> None:
    if not SSHD.exists():
        ensure_packages(["openssh-server"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@dataclass(frozen=True)
class LoopbackServer:
    url: str
    port: int
    client_config: Path
    bad_key_config: Path  # the same, with a key the server does not know


def _client_config(folder: Path, name: str, key: Path, known: Path) -> Path:
    path = folder / name
    path.write_text(
        f"Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n"
        "  StrictHostKeyChecking yes\n  BatchMode yes\n"
    )
    return path


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {proc.stderr.read() if proc.stderr else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on port {port} within {timeout:g} s")


@contextlib.contextmanager
def loopback_sshd(folder: Path) -> Iterator[LoopbackServer]:
    ensure_sshd()
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key", "stranger_key"):
        _keygen(folder / name)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    port = free_port()
    known = folder / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(folder / 'host_key.pub').read_text()}")
    root = os.geteuid() == 0
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
        f"PidFile {folder / 'sshd.pid'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        + ("PermitRootLogin prohibit-password\n" if root else "")
    )
    if root:  # sshd's privilege separation folder
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(folder / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(port, proc)
        yield LoopbackServer(
            url=f"ssh://{getpass.getuser()}@127.0.0.1:{port}",
            port=port,
            client_config=_client_config(folder, "ssh_config", folder / "client_key", known),
            bad_key_config=_client_config(folder, "ssh_config_stranger", folder / "stranger_key", known),
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
