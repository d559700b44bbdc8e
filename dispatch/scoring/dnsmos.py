"""Reference-free DNSMOS P.835 (Reddy et al., ICASSP 2022): SIG, BAK, OVRL and P.808 MOS.

Inference is espnet2's ``DNSMOS_local`` (the port of Microsoft's ``dnsmos_local.py`` that
espnet2's enh_scoring uses), so numbers agree with ESPnet's. The ONNX models
``sig_bak_ovr.onnx`` and ``model_v8.onnx`` are taken from a directory given by the caller, else
from the ``speechmos`` package (MIT, Microsoft), whose wheel ships them: nothing is downloaded.
"""
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

MODEL_FILES = ("sig_bak_ovr.onnx", "model_v8.onnx")


class DNSMOSUnavailableError(RuntimeError):
    """The DNSMOS models or onnxruntime cannot be found."""


def find_models(model_dir: Optional[str] = None) -> Tuple[Path, Path]:
    """Paths of (sig_bak_ovr.onnx, model_v8.onnx) in ``model_dir`` or in the speechmos package."""
    if model_dir is None:
        spec = importlib.util.find_spec("speechmos")
        if spec is None or spec.origin is None:
            raise DNSMOSUnavailableError(
                "DNSMOS needs its ONNX models: `pip install speechmos==0.0.1.1 onnxruntime` "
                "(speechmos ships them), or pass a directory holding "
                f"{' and '.join(MODEL_FILES)} (microsoft/DNS-Challenge, DNSMOS/DNSMOS)"
            )
        model_dir = str(Path(spec.origin).parent / "dnsmos_models")
    paths = tuple(Path(model_dir) / name for name in MODEL_FILES)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DNSMOSUnavailableError(f"DNSMOS model file(s) not found: {', '.join(missing)}")
    if importlib.util.find_spec("onnxruntime") is None:
        raise DNSMOSUnavailableError("DNSMOS needs onnxruntime: `pip install onnxruntime`")
    return paths


@lru_cache(maxsize=2)
def _load(model_dir: Optional[str]):
    """One ONNX session pair per process and model directory."""
    from espnet2.enh.layers.dnsmos import DNSMOS_local

    primary, p808 = find_models(model_dir)
    return DNSMOS_local(str(primary), str(p808), use_gpu=False, convert_to_torch=False)


def dnsmos(est: np.ndarray, fs: int, model_dir: Optional[str] = None) -> Dict[str, float]:
    """DNSMOS of one utterance (resampled to 16 kHz if needed; clips under 9 s are looped).

    Args:
        est: (T,) signal to rate.
        fs: its sampling rate.
        model_dir: directory with the ONNX models; None takes those shipped with speechmos.
    Returns:
        {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"}, each on the 1..5 MOS scale.
    """
    scores = _load(model_dir)(est.astype(np.float32), fs)
    return {
        "dnsmos_sig": float(scores["SIG"]),
        "dnsmos_bak": float(scores["BAK"]),
        "dnsmos_ovrl": float(scores["OVRL"]),
        "dnsmos_p808": float(scores["P808_MOS"]),
    }
