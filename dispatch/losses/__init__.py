"""KD losses, found by name through :data:`KD_LOSSES` (used by the ``kd_loss`` yaml key)."""
import inspect
from typing import Any, Dict, List, Optional, Type

import torch

from dispatch.losses.dfkd import DFKDLoss, dfkd_crossover
from dispatch.losses.dispatch_loss import DISPatchLoss
from dispatch.losses.si_snr import SISNRKDLoss

KD_LOSSES: Dict[str, Type[torch.nn.Module]] = {
    "dispatch": DISPatchLoss,
    "dfkd": DFKDLoss,
    "si_snr": SISNRKDLoss,
}


def _kd_loss_class(name: str) -> Type[torch.nn.Module]:
    if name not in KD_LOSSES:
        raise ValueError(f"kd_loss={name!r} is unknown; choose one of {sorted(KD_LOSSES)}")
    return KD_LOSSES[name]


def _kd_loss_params(name: str) -> Dict[str, inspect.Parameter]:
    """Keyword parameters of a registered KD loss, those it passes on via ``**kwargs`` to its base class
    included (the subclass's first)."""
    params: Dict[str, inspect.Parameter] = {}
    for cls in _kd_loss_class(name).__mro__:
        if "__init__" not in vars(cls):
            continue
        found = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
        for p in found:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                params.setdefault(p.name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in found):
            break
    return params


def kd_loss_options(name: str) -> List[str]:
    """Keyword options (``kd_loss_conf`` keys) of a registered KD loss."""
    return list(_kd_loss_params(name))


def kd_loss_defaults(name: str) -> Dict[str, Any]:
    """The default of every ``kd_loss_conf`` option of a registered KD loss that has one."""
    return {k: p.default for k, p in _kd_loss_params(name).items() if p.default is not inspect.Parameter.empty}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_problem(option: str, value, param: inspect.Parameter) -> Optional[str]:
    """What is wrong with the type of ``value`` for ``param`` (from its default and annotation), or None.

    A yaml value of the wrong type (``topk: "0.5"``, ``n_fft: 512.0``, ``topk: true``) is refused here
    rather than coerced or left to fail (or, worse, pass) deep inside the loss.
    """
    default = param.default
    annotation = str(param.annotation).replace("typing.", "")
    if value is None:
        return None if default is None or "Optional" in annotation or "None" in annotation else (
            f"{option}=None: a value is required")
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"{option}={value!r}: expected true or false"
    if annotation in ("int", "Optional[int]"):
        return None if _is_int(value) else f"{option}={value!r}: expected an integer"
    if _is_number(default) or annotation in ("float", "Optional[float]"):
        return None if _is_number(value) else f"{option}={value!r}: expected a number"
    if "Sequence[Sequence[int]]" in annotation:
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, (list, tuple)) and all(_is_int(x) for x in v) for v in value)
        return None if ok else f"{option}={value!r}: expected a list of [freq_bins, frames] integer pairs"
    if isinstance(default, tuple) and all(_is_int(x) for x in default):
        ok = isinstance(value, (list, tuple)) and all(_is_int(x) for x in value)
        return None if ok else f"{option}={value!r}: expected a list of {len(default)} integers"
    if annotation == "str":
        return None if isinstance(value, str) else f"{option}={value!r}: expected a string"
    if "Dict" in annotation and "Union" not in annotation:
        return None if isinstance(value, dict) else f"{option}={value!r}: expected a mapping"
    return None


def build_kd_loss(name: str, **conf) -> torch.nn.Module:
    """KD loss by registry name with keyword options.

    Raises:
        ValueError: for an unknown name (listing the registry), an unknown option (listing the
            loss's options) or an invalid value, each naming ``kd_loss`` / ``kd_loss_conf``.
    """
    cls = _kd_loss_class(name)
    options = kd_loss_options(name)
    unknown = sorted(set(conf) - set(options))
    if unknown:
        raise ValueError(
            f"kd_loss={name}: kd_loss_conf has unknown option(s) {unknown}; options of {cls.__name__}: {options}"
        )
    params = _kd_loss_params(name)
    for option, value in conf.items():
        problem = _type_problem(option, value, params[option])
        if problem:
            raise ValueError(f"kd_loss={name}: kd_loss_conf: {problem}")
    try:
        return cls(**conf)
    except (TypeError, ValueError, ArithmeticError) as e:  # TypeError: a value of the wrong type
        raise ValueError(f"kd_loss={name}: kd_loss_conf: {e}") from e


__all__ = ["DISPatchLoss", "DFKDLoss", "SISNRKDLoss", "dfkd_crossover", "KD_LOSSES", "build_kd_loss",
           "kd_loss_defaults", "kd_loss_options"]
