"""KD losses, found by name through :data:`KD_LOSSES` (used by the ``kd_loss`` yaml key)."""
import inspect
from typing import Dict, List, Type

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


def kd_loss_options(name: str) -> List[str]:
    """Keyword options (``kd_loss_conf`` keys) of a registered KD loss, those it passes on via
    ``**kwargs`` to its base class included."""
    options: List[str] = []
    for cls in _kd_loss_class(name).__mro__:
        if "__init__" not in vars(cls):
            continue
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
        options += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                    and p.name not in options]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return options


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
    try:
        return cls(**conf)
    except (TypeError, ValueError) as e:  # TypeError: a value of the wrong type, e.g. n_fft: "512"
        raise ValueError(f"kd_loss={name}: kd_loss_conf: {e}") from e


__all__ = ["DISPatchLoss", "DFKDLoss", "SISNRKDLoss", "dfkd_crossover", "KD_LOSSES", "build_kd_loss",
           "kd_loss_options"]
