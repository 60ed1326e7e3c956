"""Device profiles (Raspberry Pi, Android) and estimated on-device latency. Runtime side: no TensorFlow here.

For `benchmark --device` (edgecompress.benchmark):
    profile = load_profile(name_or_path)       # DeviceProfile; bad name/file -> UserError (exit 2, one line)
    profile.threads, profile.memory_budget_mb  # the device's threads (the host runs min(threads, host_cores())), memory limit
    fit = fit_for(profile)                     # DeviceFit: host timings (calibrated on demand, cached on disk) and the
                                               # fit (exponent, thread scaling, nested leave-one-out), once per process
    est = fit.estimate(host_p50_ms, spread, is_integer, threads, macs)  # DeviceEstimate (kind="estimate")
fit_for calibrates on demand (progress on stderr); on a host without TensorFlow it raises
CalibrationUnavailable (a UserError): measure without the estimate and print its message as a note.

Modules: profiles (TOML profiles), references (reference architectures, built in a TensorFlow child process),
calibrate (host timings, cached per host), threads (Amdahl thread scaling), estimate (the fit of
device ms = k x host ms^e x GMACs^(1-e), its nested leave-one-out, estimates).
"""
from edgecompress.devices.calibrate import host_cores
from edgecompress.devices.estimate import DeviceEstimate, DeviceFit, fit_for
from edgecompress.devices.profiles import DeviceProfile, list_profiles, load_profile
from edgecompress.devices.references import CalibrationUnavailable

__all__ = [
    "CalibrationUnavailable",
    "DeviceEstimate",
    "DeviceFit",
    "DeviceProfile",
    "fit_for",
    "host_cores",
    "list_profiles",
    "load_profile",
]
