"""Checks of an exported model: onnxruntime against PyTorch on test audio, and the speed of both.

Parity compares onnxruntime's output with the espnet2 model's own forward (``torch.stft`` and all, as
``SeparateSpeech`` runs it), so it covers the export wrapper as well as the exporter. Real-time
factors are measured on one CPU thread for both (``torch.set_num_threads(1)``;
onnxruntime ``intra_op_num_threads = inter_op_num_threads = 1``) with
:func:`dispatch.benchmark.measure` (median of repeats after a warm-up).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import fast_bss_eval
import numpy as np
import torch

from dispatch.benchmark import measure, num_threads
from dispatch.scoring.inputs import load_pair, read_scp
from dispatch.teacher import teacher_enhance

# The parity SI-SDR is not clamped at the scoring's 100 dB: float32 round-off alone sits above it.
PARITY_CLAMP_DB = 300.0


def ort_session(path: Path, threads: int = 1):
    """An onnxruntime CPU session running on ``threads`` threads (intra- and inter-op)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def read_test_audio(wav_scps: Sequence[Path], max_utts: int = 0) -> Dict[str, np.ndarray]:
    """{utt: float32 (samples,)} of the noisy test inputs, in list order; ``max_utts`` > 0 keeps the first ones."""
    audio: Dict[str, np.ndarray] = {}
    for scp in wav_scps:
        for utt, entry in read_scp(str(scp)).items():
            if 0 < max_utts <= len(audio):
                return audio
            wav, _, _ = load_pair(utt, entry, None, 0.0)
            if wav.ndim != 1:
                raise ValueError(f"{scp}: {utt} has {wav.shape[1]} channels; the export check takes single-channel audio")
            audio[utt] = wav.astype(np.float32)
    if not audio:
        raise ValueError(f"no utterance in {', '.join(map(str, wav_scps))}")
    return audio


@dataclass
class Parity:
    """onnxruntime vs PyTorch over the utterances checked."""

    utterances: int
    max_abs_diff: float  # largest |onnx - torch| sample over all utterances
    si_sdr_min_db: float  # SI-SDR of the onnx output against the torch output, worst utterance
    si_sdr_mean_db: float
    worst_utt: str


def parity(model: torch.nn.Module, session, audio: Dict[str, np.ndarray]) -> Parity:
    """Run both on every utterance of ``audio`` (one at a time, batch 1) and compare the outputs."""
    diffs, scores = {}, {}
    for utt, wav in audio.items():
        x = torch.from_numpy(wav).unsqueeze(0)
        ref = teacher_enhance(model, x, torch.tensor([x.shape[1]]))[0].numpy()
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0][0]
        if out.shape != ref.shape:
            raise ValueError(f"{utt}: onnxruntime gave {out.shape[0]} samples, PyTorch {ref.shape[0]}")
        diffs[utt] = float(np.abs(out - ref).max())
        scores[utt] = float(fast_bss_eval.si_sdr(ref.astype(np.float64)[None], out.astype(np.float64)[None],
                                                 zero_mean=True, clamp_db=PARITY_CLAMP_DB)[0])
    worst = min(scores, key=scores.get)
    return Parity(len(audio), max(diffs.values()), scores[worst], float(np.mean(list(scores.values()))), worst)


@dataclass
class Speed:
    """Real-time factors (processing time / audio duration) over the utterances timed, one thread."""

    utterances: int
    audio_seconds: float
    rtf_torch: float
    rtf_onnx: float
    threads: int = 1


def _total_time(fn: Callable[[np.ndarray], object], audio: Sequence[np.ndarray], repeats: int) -> float:
    cpu = torch.device("cpu")
    return sum(measure(partial(fn, wav), cpu, warmup=1, repeats=repeats).median for wav in audio)


def speed(model: torch.nn.Module, session, audio: Dict[str, np.ndarray], fs: int, repeats: int = 3,
          threads: int = 1) -> Speed:
    """Median time of each utterance (``repeats`` runs after one warm-up), summed, over the summed duration."""
    waves: List[np.ndarray] = list(audio.values())
    name = session.get_inputs()[0].name

    def run_torch(wav: np.ndarray) -> None:
        x = torch.from_numpy(wav).unsqueeze(0)
        teacher_enhance(model, x, torch.tensor([x.shape[1]]))

    def run_onnx(wav: np.ndarray) -> None:
        session.run(None, {name: wav[None]})

    seconds = sum(len(w) for w in waves) / fs
    with num_threads(threads), torch.inference_mode():
        t_torch = _total_time(run_torch, waves, repeats)
    t_onnx = _total_time(run_onnx, waves, repeats)
    return Speed(len(waves), seconds, t_torch / seconds, t_onnx / seconds, threads)
