"""espnet2's Trainer, refusing an epoch that trained or validated on nothing.

espnet2 ends a training whose iterator gave no batch with "Successfully finished" (no training step:
``all_steps_are_invalid`` only stops the loop) or with a bare ``KeyError: "valid.<loss> is not found in
stats"`` (no validation batch). Both happen when every utterance is shorter than ``chunk_length``, or with
the chunk iterator's ``--num_iters_per_epoch``, which counts utterances, not batches.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from espnet2.train.trainer import Trainer


class NoBatchError(RuntimeError):
    """An epoch's training or validation iterator gave no batch."""


class _Counted:
    """Iterable that counts what it yields; keeps the inner iterable's len() where it has one."""

    def __init__(self, inner: Iterable):
        self.inner = inner
        self.count = 0

    def __len__(self) -> int:
        return len(self.inner)  # TypeError for generators, as espnet2 expects

    def __iter__(self) -> Iterator:
        for item in self.inner:
            self.count += 1
            yield item


HINT = ("with iterator_type: chunk, check chunk_length against the utterance lengths and batch_size, and "
        "note that --num_iters_per_epoch counts utterances there, not batches")


class KDTrainer(Trainer):
    @classmethod
    def train_one_epoch(cls, iterator, reporter, **kwargs) -> bool:
        counted = _Counted(iterator)
        result = super().train_one_epoch(iterator=counted, reporter=reporter, **kwargs)
        if counted.count == 0:
            raise NoBatchError(f"the training iterator gave no batch in epoch {reporter.epoch}, so no "
                               f"training step was made ({HINT})")
        return result

    @classmethod
    def validate_one_epoch(cls, iterator, reporter, **kwargs) -> None:
        counted = _Counted(iterator)
        super().validate_one_epoch(iterator=counted, reporter=reporter, **kwargs)
        if counted.count == 0:
            raise NoBatchError(f"the validation iterator gave no batch in epoch {reporter.epoch}, so nothing "
                               f"could be validated or selected as best ({HINT})")
