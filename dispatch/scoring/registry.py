"""Metrics by name, and :class:`Scorer`, which computes a chosen set of them for one utterance."""
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from dispatch.scoring.composite import composite
from dispatch.scoring.distortion import sdr, si_sdr
from dispatch.scoring.dnsmos import dnsmos, find_models
from dispatch.scoring.perceptual import estoi, pesq_nb, pesq_wb, stoi


class MetricError(RuntimeError):
    """A metric failed on an utterance."""


@dataclass(frozen=True)
class Metric:
    """One function that yields one or more named scores.

    ``fn(ref, est, fs)`` (or ``fn(est, fs)`` when ``needs_ref`` is False) returns a float when
    ``names`` has one entry, else a dict keyed by ``names``. ``rates`` lists the sampling rates
    it accepts (None: any).
    """

    names: Tuple[str, ...]
    fn: Callable
    needs_ref: bool = True
    rates: Optional[Tuple[int, ...]] = None


_METRICS = (
    Metric(("pesq_wb",), pesq_wb, rates=(16000,)),
    Metric(("pesq_nb",), pesq_nb, rates=(8000, 16000)),
    Metric(("stoi",), stoi),
    Metric(("estoi",), estoi),
    Metric(("si_sdr",), si_sdr),
    Metric(("sdr",), sdr),
    Metric(("csig", "cbak", "covl"), composite, rates=(8000, 16000)),
    Metric(("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"), dnsmos, needs_ref=False),
)
METRICS: Dict[str, Metric] = {name: metric for metric in _METRICS for name in metric.names}
INTRUSIVE_DEFAULT = ("pesq_wb", "stoi", "estoi", "si_sdr", "sdr", "csig", "cbak", "covl")
NON_INTRUSIVE_DEFAULT = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
# With a reference: both. DNSMOS is what the DNS Challenge reports, and the only metric free of the reference.
DEFAULT = INTRUSIVE_DEFAULT + NON_INTRUSIVE_DEFAULT


class Scorer:
    """Computes the named metrics of one utterance; metrics sharing a function run it once.

    Args:
        names: metric names from :data:`METRICS`.
        composite_pesq: PESQ inside CSIG/CBAK/COVL: "nb_raw" (Loizou) or "wb".
        dnsmos_dir: directory of the DNSMOS ONNX models; None uses those shipped with speechmos.
    """

    def __init__(self, names: Sequence[str], composite_pesq: str = "nb_raw", dnsmos_dir: Optional[str] = None):
        unknown = [name for name in names if name not in METRICS]
        if unknown or not names:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {sorted(METRICS)}")
        if composite_pesq not in ("nb_raw", "wb"):
            raise ValueError(f"composite_pesq={composite_pesq!r}; choose 'nb_raw' or 'wb'")
        self.names = tuple(dict.fromkeys(names))
        self.metrics = tuple(dict.fromkeys(METRICS[name] for name in self.names))
        if any(metric.fn is dnsmos for metric in self.metrics):
            find_models(dnsmos_dir)  # fail before the run, not in a worker
        self._options = {composite: {"pesq_mode": composite_pesq}, dnsmos: {"model_dir": dnsmos_dir}}

    @property
    def needs_ref(self) -> bool:
        return any(metric.needs_ref for metric in self.metrics)

    def check_rate(self, fs: int) -> None:
        """Raise ValueError if a chosen metric cannot score audio sampled at ``fs``."""
        for metric in self.metrics:
            if metric.rates is not None and fs not in metric.rates:
                raise ValueError(f"{'/'.join(metric.names)} needs audio at {metric.rates} Hz, got {fs} Hz")

    def __call__(self, ref: Optional[np.ndarray], est: np.ndarray, fs: int) -> Dict[str, float]:
        """Scores of ``est`` (T,) against ``ref`` (T,) (None if no metric needs it), by name."""
        scores: Dict[str, float] = {}
        for metric in self.metrics:
            fn = partial(metric.fn, **self._options.get(metric.fn, {}))
            try:
                out = fn(ref, est, fs) if metric.needs_ref else fn(est, fs)
            except Exception as e:  # report which metric failed, not a deep library traceback
                raise MetricError(f"{'/'.join(metric.names)}: {type(e).__name__}: {e}") from e
            scores.update({metric.names[0]: out} if len(metric.names) == 1 else out)
        return {name: float(scores[name]) for name in self.names}
