"""Inference precision for a trained classifier: which precision to predict at, and converting a model to it.

Does: resolve the ``training.predict_precision`` setting (``"auto"``: try int8 dynamic quantization of the
Linear layers, then bf16 where the CPU has bf16 instructions, else float32) and return a copy of a float32
model at a given precision.

Does not: validate the setting (``core.config`` does, at load), load, train or run models
(``core.model.training``), or decide whether the reduced model is accurate enough to use;
``core.model.predict.choose_precision`` scores it against the float32 model on labeled texts first.

Why reduced precision at all: prediction on CPU is almost all Linear layers (tokenizing 1,000 SMS texts takes
0.06 s of ~7 s at float32). On the 2-core AVX512 machine of benchmarks/bench_predict.py, one thread, 1,000
texts: float32 7.2 s, bf16 2.5 s, int8 2.1 s. On a classifier trained with the product's defaults int8
changed 5 of 5,000 predictions (-0.02 gold points) and bf16 none; on an under-trained one (200 examples,
2 epochs) int8 cost 0.7 points, which is what the accuracy check is for. int8 is the default because it was
the fastest in every run, and because many cloud CPUs have int8 dot-product instructions (VNNI) but no bf16.
"""

from __future__ import annotations

import copy
import warnings
from typing import assert_never, cast

import torch

from core.config import Precision, PrecisionSetting
from core.errors import TrainingError


def native_bf16() -> bool:
    """True when this CPU has bf16 dot-product instructions (x86 AVX512-BF16 or AMX).

    Without them oneDNN emulates bf16, which can be slower than float32, so "auto" must not pick it there.
    ``torch.cpu``'s probes are private, hence the guarded lookup: a torch without them counts as "no".
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
    except RuntimeError:
        return False


def int8_available() -> bool:
    """True when this torch can quantize Linear layers dynamically (its eager int8 API is slated to move to
    torchao) and has a quantized engine for this CPU."""
    try:
        from torch.ao.quantization import quantize_dynamic  # noqa: F401
    except ImportError:
        return False
    return any(engine != "none" for engine in torch.backends.quantized.supported_engines)


def precision_candidates(setting: PrecisionSetting, *, int8: bool | None = None,
                         bf16_in_hardware: bool | None = None) -> list[Precision]:
    """Reduced precisions a ``training.predict_precision`` value allows here, in the order to try them; empty
    means float32 (``int8``/``bf16_in_hardware``: what this machine offers, probed when None). ``core.config``
    refused any other value at load.

    >>> precision_candidates("auto", int8=True, bf16_in_hardware=True), precision_candidates("fp32")
    (['int8', 'bf16'], [])
    """
    if setting != "auto":
        return [] if setting == "fp32" else [cast(Precision, setting)]
    found: list[Precision] = []
    if int8_available() if int8 is None else int8:
        found.append("int8")
    if native_bf16() if bf16_in_hardware is None else bf16_in_hardware:
        found.append("bf16")
    return found


def resolve_precision(setting: PrecisionSetting, *, int8: bool | None = None,
                      bf16_in_hardware: bool | None = None) -> Precision:
    """The first precision to try for a ``training.predict_precision`` value.

    >>> resolve_precision("auto", int8=True), resolve_precision("auto", int8=False, bf16_in_hardware=True)
    ('int8', 'bf16')
    """
    found = precision_candidates(setting, int8=int8, bf16_in_hardware=bf16_in_hardware)
    return found[0] if found else "fp32"


def _int8(model: torch.nn.Module) -> torch.nn.Module:
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as exc:  # announced for removal from torch in favour of torchao
        raise TrainingError(f"int8 needs torch.ao.quantization.quantize_dynamic, which this torch lacks: {exc}"
                            ) from exc
    with warnings.catch_warnings():
        # torch announces (as DeprecationWarning and UserWarning) that eager int8 moves to torchao, which this
        # project does not depend on; the API still works, and "auto" stops choosing it once it is gone.
        warnings.filterwarnings("ignore", message=r"(?s).*deprecated")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)  # returns a quantized copy


def at_precision(model: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    """``model`` (float32, eval mode) at ``precision``: a converted copy, or ``model`` itself for fp32.

    The original is never modified, so a caller can compare both before choosing one.
    """
    if precision == "fp32":
        return model
    try:
        if precision == "bf16":
            return copy.deepcopy(model).to(torch.bfloat16).eval()
        if precision == "int8":
            return _int8(model).eval()
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise TrainingError(f"cannot convert the classifier to {precision}: {exc}") from exc
    # Unreachable for a Precision: the setting was checked at load and "auto" resolved by resolve_precision.
    assert_never(precision)
