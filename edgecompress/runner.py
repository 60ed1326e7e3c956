"""Running a .tflite one sample at a time with float feeds and float results (no TensorFlow).

Inputs are matched by name, not position: the converter may reorder them, and names it writes
("serving_default_image:0") are mapped back to the model's own ("image") through the signature.
int8/uint8 inputs and outputs are quantized and dequantized with each tensor's scale and zero point,
so callers compare real values whatever the I/O type.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.errors import UserError
from edgecompress.runtime import dequantize, first_line, load_interpreter, quantize
from edgecompress.specs import TensorSpec
from edgecompress.tflite_reader import read_model, state_size

_TENSOR_NAME = re.compile(r"^(?:serving_default_)?(?P<name>.+?)(?::\d+)?$")


@dataclass(frozen=True)
class Port:
    """One input or output tensor of the interpreter."""

    spec: TensorSpec
    index: int
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.spec.dtype in ("int8", "uint8", "int16") and self.scale > 0


def _port(name: str, detail: dict[str, Any]) -> Port:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    spec = TensorSpec(name, tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]).name)
    return Port(spec, int(detail["index"]), float(scale), int(zero_point))


def clean_name(tensor_name: str) -> str:
    """A tensor's name as a user calls the input or output: 'serving_default_x:0' -> 'x'."""
    match = _TENSOR_NAME.match(tensor_name)
    return match.group("name") if match else tensor_name


def layer_name(tensor: str, layers: frozenset[str] = frozenset()) -> str:
    """'model/dense/MatMul;model/dense/BiasAdd' -> 'dense': the converter names tensors after their layers.

    Keras 3 models trace under suffixed names ('functional_1/conv_1/...' for a layer named 'conv'): with the
    model's own LAYERS given, a name they lack is matched without its '_N' suffix."""
    parts = tensor.split(";")[0].split("/")
    name = "/".join(parts[1:-1]) if len(parts) > 2 else tensor
    if layers and name not in layers:
        bare = re.sub(r"_\d+$", "", name)
        return bare if bare in layers else name
    return name


class RunFailed(UserError):
    """The runtime loaded the model but failed while running it (an op or type it has no kernel for)."""

    def __init__(self, message: str, settings: tuple[str, ...] = (), path: str | Path = "") -> None:
        super().__init__(message, settings)
        self.path = str(path)  # the file that failed
        self.where: str | None = None  # the input it failed on, when the caller knows (validation does)

    def __reduce__(self) -> tuple:  # from a child process with the input it failed on
        return type(self), (str(self), self.settings, self.path), {"where": self.where}


class TFLiteRunner:
    """A loaded .tflite: .inputs / .outputs as TensorSpecs with the model's names, .run(feeds).

    A model that keeps state between invocations (.state_variables > 0) carries it from one run() to the next
    unless run(..., reset=True) clears it first: a converted Keras LSTM does, though Keras resets it per batch.
    """

    def __init__(self, path: str | Path, num_threads: int | None = None, prefer: str | None = None,
                 preserve_all_tensors: bool = False) -> None:
        """PRESERVE_ALL_TENSORS: every intermediate tensor stays readable (no delegate: its node numbers are the
        file's operator indices)."""
        self.path = Path(path)
        self._load = lambda: load_interpreter(  # noqa: E731
            path, num_threads=num_threads, prefer=prefer, preserve_all_tensors=preserve_all_tensors,
            use_xnnpack=not preserve_all_tensors)
        self.interpreter, self.runtime = self._load()
        model = read_model(path)
        self.state_variables = state_size(model)
        # reset_all_variables() clears variable tensors (a converted LSTM's) but leaves resource variables
        # (VAR_HANDLE, set up by CALL_ONCE: streaming models) as they are: measured, a state initialised to 5
        # still held the last input after it. Those models reset by loading the file again.
        self._reset_by_reload = any(op.name == "VAR_HANDLE" for sg in model.subgraphs for op in sg.operators)
        try:
            self.in_ports, self.out_ports = self._ports()
        # A damaged file can load yet hold unreadable names or dtypes (seen when fuzzing).
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise UserError(f"{self.runtime.name} cannot read the inputs and outputs of {path} ({first_line(exc)}): "
                            "is it damaged? re-export it") from exc

    @property
    def inputs(self) -> list[TensorSpec]:
        return [p.spec for p in self.in_ports]

    @property
    def real_inputs(self) -> list[TensorSpec]:
        """The inputs as run() takes real values: float32 for quantized inputs, else their own dtype."""
        return [TensorSpec(p.spec.name, p.spec.shape, "float32") if p.quantized else p.spec for p in self.in_ports]

    def feed_specs(self, data_dtypes: dict[str, np.dtype]) -> list[TensorSpec]:
        """The one rule for what a quantized input takes, for data whose arrays have DATA_DTYPES (by input name):
        arrays of the input's own integer type are its stored values, already quantized, and go in as they
        are; anything else is real values, quantized with the input's scale and zero point."""
        return [p.spec if p.quantized and data_dtypes.get(p.spec.name) == p.spec.np_dtype else real
                for p, real in zip(self.in_ports, self.real_inputs)]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [p.spec for p in self.out_ports]

    def _ports(self) -> tuple[list[Port], list[Port]]:
        interp = self.interpreter
        by_index_in = {d["index"]: d for d in interp.get_input_details()}
        by_index_out = {d["index"]: d for d in interp.get_output_details()}
        signatures = interp.get_signature_list() if hasattr(interp, "get_signature_list") else {}
        if len(signatures) == 1:  # the converter's own names for inputs, and outputs in return order
            runner = interp.get_signature_runner(next(iter(signatures)))
            ins = runner.get_input_details()
            outs = runner.get_output_details()
            in_ports = [_port(name, by_index_in[d["index"]]) for name, d in ins.items()]
            out_ports = [_port(name, by_index_out[outs[name]["index"]]) for name in _natural(outs)]
            return in_ports, out_ports
        return (
            [_port(clean_name(d["name"]), d) for d in by_index_in.values()],
            [_port(clean_name(d["name"]), d) for d in by_index_out.values()],
        )

    def run(self, feeds: dict[str, np.ndarray], reset: bool = False) -> list[np.ndarray]:
        """One invocation; FEEDS maps input names to real-valued arrays shaped like the inputs. RESET: clear the
        model's state first (as a stateless original would have it)."""
        if reset and self._reset_by_reload:
            self.interpreter = self._load()[0]
        elif reset and self.state_variables:
            self.interpreter.reset_all_variables()
        interp = self.interpreter
        for port in self.in_ports:
            if port.spec.name not in feeds:
                raise UserError(
                    f"{self.path} needs input {port.spec.name!r}, not in the data (found: {', '.join(feeds)})"
                )
            value = np.asarray(feeds[port.spec.name]).reshape(port.spec.shape)
            interp.set_tensor(port.index, _quantize(value, port))
        try:
            interp.invoke()
        except RuntimeError as exc:  # a kernel refusing its inputs: the model's fault, not this tool's
            raise RunFailed(f"{self.runtime.name} loads {self.path} but cannot run it ({first_line(exc)}): "
                            "convert it in another quantize mode, or check it with `edgecompress check`",
                            path=self.path) from exc
        return [_dequantize(interp.get_tensor(p.index), p) for p in self.out_ports]


def _natural(names: dict[str, Any]) -> list[str]:
    """output_0, output_1, ..., output_10 in numeric order."""
    return sorted(names, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])


def _quantize(value: np.ndarray, port: Port) -> np.ndarray:
    dtype = port.spec.np_dtype
    if not port.quantized or value.dtype == dtype:  # stored values already (feed_specs), or an unquantized input
        return value.astype(dtype, copy=False)
    return quantize(value, port.scale, port.zero_point, dtype)


def _dequantize(value: np.ndarray, port: Port) -> np.ndarray:
    if not port.quantized:
        return value.astype(np.float32, copy=False) if np.issubdtype(value.dtype, np.floating) else value
    return dequantize(value, port.scale, port.zero_point)
