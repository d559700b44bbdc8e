"""What espnet2's chunk iterator will make of a data set, computed from its shape file before training.

espnet2's ``ChunkIterFactory`` (``iterator_type: chunk``) cuts every utterance of length L into
N = (L - W) // S + 1 chunks of W samples, shifted by S = int(W * chunk_shift_ratio), W drawn among the
``chunk_length`` candidates shorter than L. An utterance no candidate fits (L <= every W) is skipped
with one log warning when ``chunk_discard_short_samples`` is true (the default), or kept whole, padded
in its batch, when it is false. Chunks are grouped by W and leftovers of fewer than ``batch_size`` chunks
are dropped at the end of each epoch, so a set with too few chunks gives no batch at all; the trainer
then ends in a bare ``KeyError: "valid.<loss> is not found in stats"``.

This module counts all of that up front (:func:`chunk_coverage`), so that training can refuse a
configuration that drops data (:func:`check_chunking`) instead of finding out from poor scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union


class ChunkingError(ValueError):
    """A chunking configuration that would drop data or give no batch."""


def parse_chunk_length(chunk_length: Union[int, str]) -> List[int]:
    """Candidate chunk lengths, as espnet2 reads ``chunk_length`` ('64000', '32000,64000', '16000-16010')."""
    if isinstance(chunk_length, int):
        return [chunk_length]
    candidates: List[int] = []
    for part in str(chunk_length).split(","):
        bounds = [int(x) for x in part.split("-")]
        candidates += list(range(bounds[0], bounds[-1] + 1))
    return candidates


def read_shape_file(path: Union[str, Path]) -> Dict[str, int]:
    """``utt_id num_samples[,channels]`` lines -> {utt_id: num_samples}."""
    lengths = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            uid, shape = line.split(maxsplit=1)
            lengths[uid] = int(shape.split(",")[0])
        except ValueError:
            raise ChunkingError(f"{path}:{lineno}: expected 'utt_id num_samples', got {line!r}") from None
    return lengths


@dataclass(frozen=True)
class ChunkCoverage:
    """What one epoch of the chunk iterator uses of a set (counts are exact up to the random W choice)."""

    num_utts: int
    num_dropped: int       # utterances no chunk fits, skipped by the iterator
    num_whole: int         # utterances no chunk fits, kept whole (chunk_discard_short_samples: false)
    total_samples: int
    used_samples: int      # samples inside at least one chunk (or whole kept utterances)
    dropped_samples: int   # samples of the dropped utterances
    num_chunks: int        # chunks (and whole utterances) per epoch
    num_batches: int       # full batches per epoch; leftovers under batch_size are dropped by espnet2
    shortest_dropped: Optional[int] = None
    longest_dropped: Optional[int] = None

    @property
    def dropped_utt_share(self) -> float:
        return self.num_dropped / self.num_utts if self.num_utts else 0.0

    @property
    def used_audio_share(self) -> float:
        return self.used_samples / self.total_samples if self.total_samples else 0.0

    def describe(self, fs: Optional[int] = None) -> str:
        def secs(n: int) -> str:
            if not fs:
                return f"{n} samples"
            return f"{n / fs / 3600:.2f} h" if n >= 3600 * fs else f"{n / fs:.1f} s"

        text = (f"{self.num_utts} utterances ({secs(self.total_samples)}): "
                f"{self.num_utts - self.num_dropped} used, {self.num_dropped} dropped "
                f"({100 * self.dropped_utt_share:.1f}%, {secs(self.dropped_samples)})")
        if self.num_whole:
            text += f", {self.num_whole} shorter than every chunk kept whole"
        text += (f"; {100 * self.used_audio_share:.1f}% of the audio inside chunks per epoch; "
                 f"{self.num_chunks} chunks, {self.num_batches} batches per epoch")
        return text


def chunk_coverage(
    lengths: Sequence[int],
    chunk_length: Union[int, str],
    batch_size: int,
    chunk_shift_ratio: float = 0.5,
    discard_short_samples: bool = True,
    max_abs_length: Optional[int] = None,
) -> ChunkCoverage:
    """Count what espnet2's chunk iterator uses of utterances of ``lengths`` samples (one fs).

    W is drawn at random per utterance and epoch; counts use the longest fitting candidate, which gives
    the fewest chunks (the number of batches is thus a lower bound).
    """
    candidates = parse_chunk_length(chunk_length)
    if max_abs_length is not None:
        candidates = [min(w, max_abs_length) for w in candidates]
    dropped, whole, used, chunks = [], 0, 0, {}
    for length in lengths:
        fitting = [w for w in candidates if w < length]  # espnet2: strictly shorter than the utterance
        if not fitting:
            if discard_short_samples:
                dropped.append(length)
                continue
            whole += 1
            used += length
            chunks[0] = chunks.get(0, 0) + 1
            continue
        width = max(fitting)
        shift = max(1, int(width * chunk_shift_ratio))
        count = (length - width) // shift + 1
        used += (count - 1) * shift + width if shift <= width else count * width  # overlaps counted once
        chunks[width] = chunks.get(width, 0) + count
    return ChunkCoverage(
        num_utts=len(lengths),
        num_dropped=len(dropped),
        num_whole=whole,
        total_samples=int(sum(lengths)),
        used_samples=int(used),
        dropped_samples=int(sum(dropped)),
        num_chunks=sum(chunks.values()),
        num_batches=sum(n // batch_size for n in chunks.values()),
        shortest_dropped=min(dropped) if dropped else None,
        longest_dropped=max(dropped) if dropped else None,
    )


def check_chunking(
    shape_files: Mapping[str, Union[str, Path]],
    chunk_length: Union[int, str],
    batch_size: int,
    chunk_shift_ratio: float = 0.5,
    discard_short_samples: bool = True,
    max_abs_length: Optional[int] = None,
    max_dropped_share: float = 0.0,
) -> Dict[str, ChunkCoverage]:
    """Coverage of each set ({'train': shape file, 'valid': ...}); raise :class:`ChunkingError` when a set
    would drop more than ``max_dropped_share`` of its utterances or give no batch."""
    report = {}
    for name, path in shape_files.items():
        lengths = list(read_shape_file(path).values())
        cov = chunk_coverage(lengths, chunk_length, batch_size, chunk_shift_ratio, discard_short_samples,
                             max_abs_length)
        report[name] = cov
        where = f"{name} set ({path}) with chunk_length={chunk_length}, batch_size={batch_size}"
        if cov.dropped_utt_share > max_dropped_share:
            raise ChunkingError(
                f"the chunk iterator would drop {cov.num_dropped} of {cov.num_utts} utterances "
                f"({100 * cov.dropped_utt_share:.1f}%, lengths {cov.shortest_dropped}-{cov.longest_dropped} samples) "
                f"of the {where}: none is longer than the shortest chunk_length. Shorten chunk_length, set "
                f"chunk_discard_short_samples: false (keep them whole, padded), or allow it with "
                f"--chunk_max_dropped_share {cov.dropped_utt_share:.3f}"
            )
        if cov.num_batches == 0:
            raise ChunkingError(
                f"the {where} gives no batch: {cov.num_chunks} chunks per epoch, fewer than batch_size "
                f"(espnet2 drops the leftover chunks). Use a smaller batch_size or chunk_length, or more data"
            )
    return report
