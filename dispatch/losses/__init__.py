"""KD losses, found by name through :data:`KD_LOSSES` (used by the ``kd_loss`` yaml key)."""
from typing import Dict, Type

import torch

from dispatch.losses.dfkd import DFKDLoss, dfkd_crossover
from dispatch.losses.dispatch_loss import DISPatchLoss
from dispatch.losses.si_snr import SISNRKDLoss

KD_LOSSES: Dict[str, Type[torch.nn.Module]] = {
    "dispatch": DISPatchLoss,
    "dfkd": DFKDLoss,
    "si_snr": SISNRKDLoss,
}


def build_kd_loss(name: str, **conf) -> torch.nn.Module:
    """KD loss by registry name with keyword options."""
    if name not in KD_LOSSES:
        raise ValueError(f"kd_loss={name!r} is unknown; choose one of {sorted(KD_LOSSES)}")
    return KD_LOSSES[name](**conf)


__all__ = ["DISPatchLoss", "DFKDLoss", "SISNRKDLoss", "dfkd_crossover", "KD_LOSSES", "build_kd_loss"]
