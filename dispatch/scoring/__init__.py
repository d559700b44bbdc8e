"""Per-utterance speech enhancement metrics, found by name through :data:`METRICS`.

Intrusive (estimate vs clean reference): pesq_wb, pesq_nb, stoi, estoi, si_sdr, sdr, csig, cbak,
covl. Reference-free: dnsmos_sig, dnsmos_bak, dnsmos_ovrl, dnsmos_p808.
"""
from dispatch.scoring.composite import composite, llr_frames, segmental_snr, wss_frames
from dispatch.scoring.distortion import sdr, si_sdr
from dispatch.scoring.dnsmos import DNSMOSUnavailableError, dnsmos
from dispatch.scoring.inputs import ScoringInputError
from dispatch.scoring.perceptual import estoi, pesq_nb, pesq_nb_raw, pesq_wb, stoi
from dispatch.scoring.registry import (
    DEFAULT,
    INTRUSIVE_DEFAULT,
    METRICS,
    NON_INTRUSIVE_DEFAULT,
    Metric,
    MetricError,
    Scorer,
)

__all__ = [
    "METRICS", "DEFAULT", "INTRUSIVE_DEFAULT", "NON_INTRUSIVE_DEFAULT", "Metric", "Scorer", "MetricError",
    "ScoringInputError", "DNSMOSUnavailableError",
    "pesq_wb", "pesq_nb", "pesq_nb_raw", "stoi", "estoi", "si_sdr", "sdr",
    "composite", "llr_frames", "wss_frames", "segmental_snr", "dnsmos",
]
