"""DISPatch: selective-patch knowledge distillation for speech enhancement, on espnet2."""
from dispatch.losses import KD_LOSSES, DFKDLoss, DISPatchLoss, SISNRKDLoss, build_kd_loss
from dispatch.version import __version__

__all__ = ["DISPatchLoss", "DFKDLoss", "SISNRKDLoss", "KD_LOSSES", "build_kd_loss", "__version__"]
