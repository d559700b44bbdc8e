"""Which test utterances the listening page shows, by a fixed, documented rule.

The rule: the utterances with the best, median and worst per-utterance gain of the *subject* (the KD
student with the highest mean of the ranking metric; the best model when no KD student is given) over
the *reference* (the baseline student; the noisy input with ``--baseline ''``), plus the ids given by
the user (``--utts``). Gains are ``subject - reference`` (every metric used here is higher-is-better);
utterances without a score on either side are left out of the ranking; ties are broken by utterance id so
that the choice is reproducible.
"""
from __future__ import annotations

import math
from typing import Collection, Dict, List, Sequence

from dispatch.report.inputs import ReportInputError, Scores


def choose_utterances(
    subject: Scores,
    reference: Scores,
    fixed: Sequence[str] = (),
    known: Collection[str] = (),
    metric: str = "PESQ_WB",
) -> Dict[str, List[str]]:
    """Utterance id -> why it was chosen, ranked ones first (best, median, worst), then ``fixed``.

    Args:
        subject, reference: per-utterance scores of the two systems compared.
        fixed: ids shown whatever their scores (the ``--utts`` option).
        known: every id of the test set, to check ``fixed`` against.
        metric: name of the metric, for the reasons.

    Returns:
        An ordered dict; an utterance picked for several reasons is listed once with all of them.

    Raises:
        ReportInputError: if a fixed id is not in ``known``.
    """
    unknown = [u for u in fixed if u not in known]
    if unknown:
        raise ReportInputError(f"--utts: unknown utterance id(s) {', '.join(unknown)} (not in the test set)")
    gains = sorted(
        (subject[u] - reference[u], u)
        for u in subject.keys() & reference.keys()
        if not (math.isnan(subject[u]) or math.isnan(reference[u]))
    )
    chosen: Dict[str, List[str]] = {}
    if gains:
        # Lower median for an even count: an utterance that exists, not an average of two.
        for label, (gain, utt) in (("best", gains[-1]), ("median", gains[(len(gains) - 1) // 2]), ("worst", gains[0])):
            chosen.setdefault(utt, []).append(f"{label} {metric} gain ({gain:+.3f})")
    for utt in fixed:
        chosen.setdefault(utt, []).append("chosen by --utts")
    return chosen
