"""DISPatch: selective-patch knowledge distillation for speech enhancement, on espnet2."""
from dispatch.version import __version__

__all__ = ["DISPatchLoss", "DFKDLoss", "SISNRKDLoss", "KD_LOSSES", "build_kd_loss", "__version__"]


def __getattr__(name: str):
    """The losses are imported on first use, so that light command-line tools (dispatch.fingerprint,
    dispatch.bin.format_data) start without importing torch."""
    if name in __all__:
        from dispatch import losses

        return getattr(losses, name)
    raise AttributeError(f"module 'dispatch' has no attribute {name!r}")
