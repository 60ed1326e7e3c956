"""Device profiles (Raspberry Pi, Android) and estimated on-device latency. Runtime side: no TensorFlow here.

For `benchmark --device` (helper-facing API):
    profile = load_profile(name_or_path)       # DeviceProfile; bad name/file -> UserError (exit 2, one line)
    profile.threads, profile.memory_budget_mb  # threads to run (cap at calibrate.host_cores()), child memory limit
    est = estimate_for(profile, p50_ms, p90_ms, is_integer, macs=total_macs)  # DeviceEstimate (kind="estimate")
    device_summary(profile, est_or_None, threads_used, threads_capped)  # the JSON `device` object of issue 3
estimate_for calibrates on demand (progress on stderr); on a host without TensorFlow it raises
CalibrationUnavailable (a UserError): measure without the estimate and print its message as a note.

Modules: profiles (TOML profiles), references (reference architectures, built in a TensorFlow child process),
calibrate (host timings, cached per host), threads (Amdahl thread scaling), estimate (the fit of
device ms = k x host ms^e x GMACs^(1-e), its nested leave-one-out, estimates).
"""
from edgecompress.devices.calibrate import host_cores
from edgecompress.devices.estimate import DeviceEstimate, device_summary, estimate_for
from edgecompress.devices.profiles import DeviceProfile, list_profiles, load_profile
from edgecompress.devices.references import CalibrationUnavailable

__all__ = [
    "CalibrationUnavailable",
    "DeviceEstimate",
    "DeviceProfile",
    "device_summary",
    "estimate_for",
    "host_cores",
    "list_profiles",
    "load_profile",
]
