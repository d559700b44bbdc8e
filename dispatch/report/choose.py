"""Which test utterances the listening page and RESULTS.md picture, by one fixed, documented rule.

The rule: the utterances with the best, median and worst per-utterance gain of the *subject* (the KD
student with the highest mean of the ranking metric, :func:`dispatch.exptree.best_student`) over the
*reference* (the baseline student; the noisy input when there is none), plus the ids given by the user
(``--utts``). Gains are ``subject - reference`` (every metric used here is higher-is-better);
utterances without a score on either side are left out of the ranking; ties are broken by utterance id
so that the choice is reproducible.
"""
from __future__ import annotations

import math
from typing import Collection, Dict, List, Optional, Sequence, Tuple

from dispatch.exptree import Experiment, Scores, TreeError, best_student


def check_utts(utts: Sequence[str], known: Collection[str], test_sets: Sequence[str]) -> None:
    """Refuse ``--utts`` ids that are in none of the test sets (``known``: their ids)."""
    unknown = [u for u in utts if u not in known]
    if unknown:
        raise TreeError(f"--utts: {', '.join(unknown)} not in the test sets ({', '.join(test_sets)})")


def choose_utterances(
    subject: Scores, reference: Scores, fixed: Sequence[str] = (), metric: str = "PESQ_WB"
) -> Dict[str, List[str]]:
    """Utterance id -> why it was chosen (all its reasons), ranked ones first (best, median, worst), then
    ``fixed`` (``--utts``, shown whatever their scores)."""
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


def choose_for_set(
    exps: Sequence[Experiment],
    dset: str,
    reference: str,
    reference_scores: Optional[Scores],
    known: Collection[str],
    fixed: Sequence[str] = (),
    metric: str = "PESQ_WB",
) -> Tuple[Dict[str, List[str]], str]:
    """The utterances of ``dset`` to show (:func:`choose_utterances`, ``fixed`` ids of other sets left out)
    and the rule in words; the subject is the best of ``exps`` other than ``reference`` (the baseline
    student or the noisy input)."""
    fixed = [u for u in fixed if u in known]
    subject = best_student(exps, dset, metric, exclude=[reference])
    subject_scores = subject.scores(dset, metric) if subject else None
    if not subject_scores or not reference_scores:
        rule = f"the --utts utterances (no per-utterance {metric} of a student and of {reference} to rank by)"
        return choose_utterances({}, {}, fixed, metric), rule
    role = "the KD student" if subject.kd_loss_name else "the model (no KD student given)"
    rule = (f"the utterances with the best, median and worst per-utterance {metric} gain of {subject.name} "
            f"({role} with the highest mean {metric}) over {reference}" + (", plus --utts" if fixed else ""))
    return choose_utterances(subject_scores, reference_scores, fixed, metric), rule
