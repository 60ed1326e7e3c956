"""Does `benchmark --on ssh://` measure what a local `benchmark` measures in the same environment?

Starts a throwaway OpenSSH server on 127.0.0.1 (tools/loopback_sshd.py), then alternates, round by round
(in ABBA order), a local `edgecompress benchmark MODEL --json` and the same command with `--on ssh://...`
whose device Python is this same environment, and prints the ratio of medians (ssh p50 / local p50) per model.

    .venv/bin/python benchmarks/ssh_fidelity.py [MODEL.tflite ...] [--rounds 5] [--runs 30] [--threads 1]

Without models: MobileNetV2 1.0/224 fp32 and int8 from the estimate references' cache
(~/.cache/edgecompress/references, made by `edgecompress devices calibrate`).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import tool

loopback_sshd = tool("loopback_sshd").loopback_sshd
REFERENCES = Path.home() / ".cache" / "edgecompress" / "references"
DEFAULT_MODELS = [REFERENCES / "mobilenet_v2-float.tflite", REFERENCES / "mobilenet_v2-int8.tflite"]
CLI = [sys.executable, "-m", "edgecompress"]


def p50(args: list[str]) -> float:
    proc = subprocess.run(CLI + ["benchmark", *args, "--json"], capture_output=True, text=True, check=True, cwd="/")
    data = json.loads(proc.stdout)
    result = (data["results"] if isinstance(data, dict) else data)[0]
    return result["latency_ms"]["p50"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    missing = [m for m in args.models if not m.is_file()]
    if missing:
        sys.exit(f"missing {', '.join(map(str, missing))}: run `edgecompress devices calibrate` or pass models")
    with tempfile.TemporaryDirectory() as tmp, loopback_sshd(Path(tmp)) as server:
        remote = ["--on", server.url, "--ssh-config", str(server.client_config), "--remote-python", sys.executable]
        print(f"{'model':28s} {'local p50 ms':>13s} {'ssh p50 ms':>11s} {'ratio':>7s}  (median of {args.rounds} "
              f"alternating rounds, {args.runs} runs, {args.threads} thread(s))")
        for model in args.models:
            common = [str(model.resolve()), "--runs", str(args.runs), "--min-secs", "0", "--threads", str(args.threads)]
            local, over_ssh = [], []
            for r in range(args.rounds):
                # ABBA order: whatever runs second in a round (warm caches, a load change) favours neither side.
                for side in ((local, common), (over_ssh, common + remote))[:: 1 if r % 2 == 0 else -1]:
                    side[0].append(p50(side[1]))
            lm, rm = statistics.median(local), statistics.median(over_ssh)
            print(f"{model.name:28s} {lm:13.3f} {rm:11.3f} {rm / lm:7.3f}")


if __name__ == "__main__":
    main()
