"""Thread scaling for the device estimates: Amdahl's law with a parallel fraction fitted to published pairs.

A run at n threads takes time(1 thread) x slowdown(p, n), slowdown = (1 - p) + p / n, where p is the share
of the work that parallelises. The device's p is the mean of the fractions implied by published single- vs
multi-thread latencies of the same model: the XNNPACK pairs below plus any profile's own (Pixel 3a: 55 vs
28 ms). The host's p comes from the calibration's own timings of one model at several thread counts (the
Pixel 3a references give MobileNet v2 at 1 and 2 host threads); without such a pair the host is assumed
to scale like the devices. One shared p for all devices and models: two or three pairs support no more.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from edgecompress.devices.calibrate import HostTimings
from edgecompress.devices.profiles import DeviceProfile


@dataclass(frozen=True)
class ThreadPair:
    device: str
    model: str
    one_thread_ms: float
    threads: int
    multi_thread_ms: float
    source: str


# Published pairs of devices without a profile (the XNNPACK README's FP32 MobileNet v2 table). Its
# "multi-threaded" column gives no count: recorded as 4, as the Pixel 3a profile records its own pair.
XNNPACK_PAIRS = (
    ThreadPair("Pixel", "mobilenet_v2", 49, 4, 26, "XNNPACK README (2022-02-08), FP32 MobileNet v2, Pixel, 1 thread vs multi-threaded"),
    ThreadPair("Pixel 2", "mobilenet_v2", 53, 4, 18, "XNNPACK README (2022-02-08), FP32 MobileNet v2, Pixel 2, 1 thread vs multi-threaded"),
)


@dataclass(frozen=True)
class ThreadScaling:
    device_fraction: float
    host_fraction: float
    pairs: int  # published pairs behind device_fraction

    def device_slowdown(self, threads: int) -> float:
        return slowdown(self.device_fraction, threads)

    def host_slowdown(self, threads: int) -> float:
        return slowdown(self.host_fraction, threads)


def slowdown(fraction: float, threads: int) -> float:
    """Time at THREADS relative to one thread, by Amdahl's law."""
    return (1.0 - fraction) + fraction / threads


def parallel_fraction(one_thread_ms: float, multi_thread_ms: float, threads: int) -> float:
    return (1.0 - multi_thread_ms / one_thread_ms) / (1.0 - 1.0 / threads)


def profile_pairs(profiles: Iterable[DeviceProfile], exclude: frozenset[tuple[str, str]]) -> list[ThreadPair]:
    """Published (not derived) 1-thread vs n-thread references of the same model and precision on one device."""
    pairs = []
    for profile in profiles:
        refs = [r for r in profile.references if not r.derived and (profile.name, r.key) not in exclude]
        singles = {(r.model, r.precision): r for r in refs if r.threads == 1}
        for r in refs:
            one = singles.get((r.model, r.precision))
            if one is not None and r.threads > 1:
                pairs.append(ThreadPair(profile.name, r.model, one.latency_ms, r.threads, r.latency_ms, r.source))
    return pairs


def thread_scaling(
    profiles: Iterable[DeviceProfile], timings: HostTimings, exclude: frozenset[tuple[str, str]] = frozenset()
) -> ThreadScaling:
    """The device and host parallel fractions; EXCLUDE holds (device, reference key) left out (leave-one-out)."""
    pairs = list(XNNPACK_PAIRS) + profile_pairs(profiles, exclude)
    device = sum(parallel_fraction(p.one_thread_ms, p.multi_thread_ms, p.threads) for p in pairs) / len(pairs)
    host = [
        parallel_fraction(one, ms, threads)
        for (model, precision, threads), ms in timings.ms.items()
        if threads > 1 and (one := timings.ms.get((model, precision, 1)))
    ]
    return ThreadScaling(device, sum(host) / len(host) if host else device, len(pairs))
