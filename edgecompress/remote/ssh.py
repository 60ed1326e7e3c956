"""The system OpenSSH client as a transport: `ssh` with BatchMode, the user's keys and agent.

Host keys are verified as ssh verifies them (known_hosts, StrictHostKeyChecking from the user's config);
no password is ever passed. Remote commands go through the device's shell, so every argument is
shlex-quoted; locally everything runs as an argument list (never shell=True).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edgecompress.errors import UserError

SSH_FAILED = 255  # ssh's own exit code for connection and authentication failures
# ssh's stderr phrases -> what the user should read (first match wins).
SSH_ERRORS = (
    ("Permission denied", "authentication refused by {url}: add your public key to the device's "
                          "~/.ssh/authorized_keys (ssh-copy-id) or name the key in --ssh-config"),
    ("Host key verification failed", "the host key of {url} could not be verified: connect once with `ssh` "
                                     "to check and accept it, or name a known_hosts file in --ssh-config"),
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "the host key of {url} changed: check the device, then update "
                                               "known_hosts (ssh-keygen -R HOST)"),
    ("Could not resolve hostname", "host of {url} is unknown: check the name (or add it to --ssh-config)"),
)
CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class SshTarget:
    url: str
    user: str | None
    host: str
    port: int | None
    config: Path | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def ssh_argv(self, remote: list[str]) -> list[str]:
        """ssh running REMOTE (argv) on the device; each word is quoted for the device's shell."""
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
        if self.config is not None:
            opts = ["-F", str(self.config), *opts]
        if self.port is not None:
            opts += ["-p", str(self.port)]
        return ["ssh", *opts, self.destination, "--", " ".join(shlex.quote(a) for a in remote)]


def parse_target(url: str, config: str | Path | None = None) -> SshTarget:
    """ssh://[USER@]HOST[:PORT]; an --ssh-config file supplies everything else (keys, known hosts, jumps)."""
    parts = urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/") or parts.password:
        raise UserError(f"device {url!r} is not an ssh://USER@HOST[:PORT] address (no password in it)")
    try:
        port = parts.port
    except ValueError:
        raise UserError(f"the port in {url!r} is not a number from 1 to 65535") from None
    cfg = None
    if config is not None:
        cfg = Path(config)
        if not cfg.is_file():
            raise UserError(f"ssh config {cfg} does not exist: give an ssh_config file (as for `ssh -F`)")
    if shutil.which("ssh") is None:
        raise UserError("no `ssh` client on PATH: install OpenSSH's client (apt-get install openssh-client)")
    return SshTarget(url, parts.username, parts.hostname, port, cfg)


class ConnectionLost(Exception):
    """The device stopped answering after the session had started."""


def ssh_error(target: SshTarget, stderr: str) -> str:
    """One line for an ssh failure (exit 255), from ssh's own message."""
    for phrase, message in SSH_ERRORS:
        if phrase in stderr:
            return message.format(url=target.url)
    last = next((ln.strip() for ln in reversed(stderr.splitlines()) if ln.strip()), "no message")
    return f"{target.url} is unreachable: {last}"


def run_ssh(target: SshTarget, remote: list[str], timeout: float, stdin: Path | None = None) -> subprocess.CompletedProcess:
    """Run REMOTE on the device (STDIN: a file fed to it); ssh's own failures raise ConnectionLost."""
    try:
        with open(stdin, "rb") if stdin is not None else open(os.devnull, "rb") as feed:
            proc = subprocess.run(target.ssh_argv(remote), capture_output=True, timeout=timeout, stdin=feed)
    except subprocess.TimeoutExpired:
        raise ConnectionLost(f"{target.url} did not answer within {timeout:g} s") from None
    proc.stdout, proc.stderr = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    if proc.returncode == SSH_FAILED:
        raise ConnectionLost(ssh_error(target, proc.stderr))
    return proc
