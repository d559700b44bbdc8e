"""Stage 2's conversion of noisy/clean pairs to 16-bit PCM mono wavs at the recipe rate.

A pair is converted as one unit, so that what is done to one side is done to the other:

- a pair whose two sides already are 16-bit PCM mono wav files at the rate, with no segment to cut, is
  referenced where it is; any other pair is read (file, archive entry or command; cut by its Kaldi
  segment), resampled and written under ``<dst>/data/{noisy,clean}/<utt>.wav``;
- several channels are averaged only with ``downmix`` (validation refuses them otherwise);
- samples above full scale (|x| > 1, float sources) are never clipped silently: the pair is refused
  (:class:`PairResult.over`), or with ``rescale`` both sides are scaled by the one factor that brings
  the louder below full scale, so that noisy and clean stay a consistent pair. Resampling overshoot of
  a source within full scale is clipped and counted (or rescaled with ``rescale``).

The options a conversion was made with are recorded in ``<dst>/data/.convert.json``; other options
remove the earlier copies (:func:`prepare_copies`), so no copy made another way is kept.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from dispatch.data.atomic import write_text_atomic
from dispatch.data.audio import _INT16_MAX, entry_kind, probe, read_entry, resample, write_wav
from dispatch.data.datadir import segment_frames

CONVERT_RECORD = ".convert.json"
Segment = Tuple[str, float, float]


@dataclass(frozen=True)
class PairJob:
    utt: str
    noisy: str  # list entries (file, archive entry or command)
    clean: str
    noisy_dst: Path
    clean_dst: Path
    fs: int
    segment: Optional[Segment] = None
    downmix: bool = False
    rescale: bool = False


@dataclass
class PairResult:
    utt: str
    noisy: str = ""  # paths to list in the formatted dir
    clean: str = ""
    downmixed: List[Tuple[str, int]] = field(default_factory=list)  # (list name, channels) of averaged sides
    factor: Optional[float] = None  # the pair's scale factor, when rescaled
    clipped: int = 0  # samples clipped after resampling (source within full scale)
    over: Optional[Tuple[str, str, float]] = None  # (list name, entry, peak): refused, nothing written


_WHOLE: dict = {}  # this process's last archive entries / command outputs that segments are cut from


def _referable(entry: str, fs: int) -> bool:
    if entry_kind(entry) != "file":
        return False
    info = probe(entry)
    return info.is_pcm16_wav_at(fs) and info.channels == 1


def _read_side(entry: str, segment: Optional[Segment], job: PairJob, name: str, result: PairResult) -> Tuple[np.ndarray, float]:
    """(samples at job.fs, mono; peak of the source samples)."""
    if entry_kind(entry) == "file":  # only the segment's samples are read
        info = probe(entry)
        start, stop = segment_frames(segment, info.samplerate, info.frames) if segment else (0, None)
        data, rate = read_entry(entry, start, stop)
    elif segment is None:  # an archive entry or a command: read whole
        data, rate = read_entry(entry)
    else:  # ... once for all the segments of its recording (jobs come grouped by recording)
        if entry not in _WHOLE:
            if len(_WHOLE) >= 2:
                _WHOLE.clear()  # noisy and clean of one recording at a time
            _WHOLE[entry] = read_entry(entry)
        data, rate = _WHOLE[entry]
        start, stop = segment_frames(segment, rate, len(data))
        data = data[start:stop]
    if data.ndim == 2:
        if data.shape[1] > 1:
            if not job.downmix:
                raise ValueError(f"{entry}: {data.shape[1]} channels (give --downmix true to average them)")
            result.downmixed.append((name, data.shape[1]))
        data = data.mean(axis=1)
    peak = float(np.abs(data).max()) if len(data) else 0.0
    return resample(data, rate, job.fs), peak


def convert_pair(job: PairJob) -> PairResult:
    """Convert (or reference) one noisy/clean pair; see the module docstring."""
    result = PairResult(job.utt)
    if job.segment is None and _referable(job.noisy, job.fs) and _referable(job.clean, job.fs):
        result.noisy, result.clean = str(Path(job.noisy).resolve()), str(Path(job.clean).resolve())
        return result
    if job.noisy_dst.exists() and job.clean_dst.exists():  # written whole (atomic) with these options
        result.noisy, result.clean = str(job.noisy_dst.resolve()), str(job.clean_dst.resolve())
        return result
    noisy, noisy_peak = _read_side(job.noisy, job.segment, job, "wav.scp", result)
    clean, clean_peak = _read_side(job.clean, job.segment, job, "spk1.scp", result)
    if max(noisy_peak, clean_peak) > 1.0 and not job.rescale:
        result.over = ("wav.scp", job.noisy, noisy_peak) if noisy_peak >= clean_peak else ("spk1.scp", job.clean, clean_peak)
        return result
    out_peak = max(float(np.abs(noisy).max(initial=0.0)), float(np.abs(clean).max(initial=0.0)))
    if out_peak > 1.0:
        if job.rescale:
            result.factor = _INT16_MAX / out_peak
            noisy, clean = noisy * result.factor, clean * result.factor
        else:  # resampling overshoot of a source within full scale
            result.clipped = int((np.abs(noisy) > 1.0).sum() + (np.abs(clean) > 1.0).sum())
    write_wav(job.noisy_dst, noisy, job.fs)
    write_wav(job.clean_dst, clean, job.fs)
    result.noisy, result.clean = str(job.noisy_dst.resolve()), str(job.clean_dst.resolve())
    return result


def _convert_pair(job: PairJob) -> PairResult:
    try:
        return convert_pair(job)
    except (ValueError, OSError, sf.SoundFileError) as e:  # named with its utterance, not a traceback
        raise ValueError(f"utterance '{job.utt}': {e}") from e


def convert_pairs(jobs: Sequence[PairJob], nj: int = 1) -> List[PairResult]:
    """:func:`convert_pair` of every job, in order, with ``nj`` processes.

    Raises:
        ValueError: the first unreadable pair, naming its utterance and entry.
    """
    # Grouped by recording, so that a command or archive entry cut by segments is read once per process.
    order = sorted(range(len(jobs)), key=lambda i: (jobs[i].noisy, jobs[i].clean, i))
    work = [jobs[i] for i in order]
    if nj <= 1 or len(jobs) <= 1:
        done = [_convert_pair(job) for job in work]
    else:
        with Pool(min(nj, len(jobs))) as pool:
            done = pool.map(_convert_pair, work, chunksize=max(1, min(64, len(jobs) // nj)))
    results: List[Optional[PairResult]] = [None] * len(jobs)
    for i, result in zip(order, done):
        results[i] = result
    return results


def prepare_copies(copies_dir: Path, options: dict) -> None:
    """Make ``copies_dir`` hold only copies converted with ``options``: earlier copies made with other
    options (another rate, downmixing, rescaling, segments) are removed, saying why."""
    record = copies_dir / CONVERT_RECORD
    try:
        previous = json.loads(record.read_text())
    except (OSError, ValueError):
        previous = None
    if previous == options:
        return
    if copies_dir.exists() and any(p.name != CONVERT_RECORD for p in copies_dir.iterdir()):
        if previous is None:
            why = "made by an unknown earlier run"
        else:
            changed = [f"{k} {previous.get(k)!r} -> {v!r}" for k, v in options.items() if previous.get(k) != v]
            why = "made with other options (" + ", ".join(changed) + ")"
            if previous.get("fs") != options.get("fs"):
                why = (f"made at {previous.get('fs')} Hz, this run formats at {options.get('fs')} Hz "
                       f"({', '.join(changed)})")
        logging.info(f"{copies_dir}: the converted copies were {why}: removing them, converting again")
        shutil.rmtree(copies_dir)
    copies_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record, json.dumps(options, sort_keys=True))


def summarize(src: Path, results: Sequence[PairResult]) -> None:
    """Log what was done beyond plain conversion (downmixing, rescaling, clipping after resampling)."""
    downmixed = [(r.utt, name, ch) for r in results for name, ch in r.downmixed]
    if downmixed:
        utt, name, ch = downmixed[0]
        logging.warning(f"{src}: downmixed {len(downmixed)} file(s) to mono (the mean of their channels), "
                        f"e.g. {name}: utterance '{utt}' ({ch} channels)")
    scaled = [r for r in results if r.factor is not None]
    if scaled:
        low = min(scaled, key=lambda r: r.factor)
        logging.warning(f"{src}: rescaled {len(scaled)} utterance pair(s) above full scale (noisy and clean by "
                        f"the same factor), the smallest factor {low.factor:.4f} for utterance '{low.utt}'")
    clipped = [r for r in results if r.clipped]
    if clipped:
        logging.warning(f"{src}: {sum(r.clipped for r in clipped)} sample(s) of {len(clipped)} utterance(s) "
                        "went above full scale in resampling and were clipped (the sources are within full "
                        "scale); --rescale true scales such pairs instead")


def over_full_scale(results: Sequence[PairResult]) -> Optional[str]:
    """The refusal message for pairs above full scale, or None."""
    over = [r for r in results if r.over is not None]
    if not over:
        return None
    worst = max(over, key=lambda r: r.over[2])
    name, entry, peak = worst.over
    return (f"{len(over)} utterance(s) hold samples above full scale (|x| > 1), which 16-bit PCM cannot "
            f"hold; the loudest: {name}: utterance '{worst.utt}': {entry}: peak {peak:.3f}. They are not "
            "clipped: fix the corpus, or give format_data --rescale true (enh_kd.sh --format_args "
            "\"--rescale true\") to scale each such noisy/clean pair by one factor")
