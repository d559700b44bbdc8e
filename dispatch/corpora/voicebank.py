"""VoiceBank+DEMAND (Valentini-Botinhao et al., 28-speaker version) as Kaldi data dirs.

Corpus: Edinburgh DataShare, https://datashare.ed.ac.uk/handle/10283/2791 (doi:10.7488/ds/2117), 48 kHz.
``root`` holds the four folders below, or their ``<folder>.zip`` archives, which are checked and
unpacked here (downloading is left to ``local/data.sh``)::

    clean_trainset_28spk_wav/  noisy_trainset_28spk_wav/   11572 files p<spk>_<nnn>.wav, 28 speakers
    clean_testset_wav/         noisy_testset_wav/            824 files, speakers p232 and p257

Data dirs, named as in ESPnet's egs2/vctk_noisy/enh1:

    tr_26spk   training speakers except p226 and p287
    cv_2spk    training speakers p226 and p287 (validation)
    tt_2spk    the official test set

Usage::

    python -m dispatch.corpora.voicebank --root downloads/voicebank_demand --data_dir data --fs 16000
"""
from __future__ import annotations

import argparse
import re
import shutil
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from espnet2.utils.types import str2bool

from dispatch.corpora.common import (
    CorpusError,
    check_count,
    list_wavs,
    run_main,
    to_pcm16,
    validate_sets,
)
from dispatch.data.datadir import write_data_dir

CLEAN_TRAIN, NOISY_TRAIN = "clean_trainset_28spk_wav", "noisy_trainset_28spk_wav"
CLEAN_TEST, NOISY_TEST = "clean_testset_wav", "noisy_testset_wav"
FOLDERS = (CLEAN_TRAIN, NOISY_TRAIN, CLEAN_TEST, NOISY_TEST)
NUM_TRAIN, NUM_TEST = 11572, 824
VALID_SPEAKERS = ("p226", "p287")
TRAIN_SET, VALID_SET, TEST_SET = "tr_26spk", "cv_2spk", "tt_2spk"
_UTT_NAME = re.compile(r"^(p\d+)_\d+\.wav$")

Pairs = Dict[str, Tuple[Path, Path]]  # utterance -> (noisy, clean)


def unpack(root: Path, folder: str) -> Path:
    """Return ``root/folder``, unpacking ``root/folder.zip`` first if the folder is absent.

    The archive is tested (CRC of every member) and must hold everything under ``folder/``. It is
    unpacked into a temporary folder that is renamed when complete, so an interrupted run redoes it.

    Raises:
        CorpusError: naming the path when neither folder nor archive exists, the archive is damaged or
            incomplete, or it has another layout.
    """
    target = root / folder
    if target.is_dir():
        return target
    archive = root / f"{folder}.zip"
    if not archive.is_file():
        raise CorpusError(
            f"{root}: neither {folder}/ nor {folder}.zip; expected the VoiceBank+DEMAND folders or "
            f"archives {', '.join(FOLDERS)} (from https://datashare.ed.ac.uk/handle/10283/2791)"
        )
    print(f"Checking and unpacking {archive}", flush=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            damaged = zf.testzip()
            members = [m for m in zf.namelist() if not m.startswith("__MACOSX/")]
            stray = [m for m in members if not m.startswith(f"{folder}/")]
            if damaged or stray:
                problem = f"damaged member {damaged}" if damaged else f"member {stray[0]} outside {folder}/"
                raise CorpusError(f"{archive}: {problem}; expected an intact archive of {folder}/")
            partial = root / f".{folder}.unpacking"
            shutil.rmtree(partial, ignore_errors=True)
            zf.extractall(partial, members)
    except zipfile.BadZipFile as e:
        raise CorpusError(
            f"{archive}: not a complete zip archive ({e}); an interrupted download? Remove it and rerun"
        ) from e
    (partial / folder).rename(target)
    partial.rmdir()
    return target


def _utterances(folder: Path) -> Dict[str, Path]:
    """utterance id (file name without .wav) -> path, checking the p<spk>_<nnn>.wav naming."""
    utts = {}
    for wav in list_wavs(folder, "VoiceBank+DEMAND files p<speaker>_<number>.wav"):
        if not _UTT_NAME.match(wav.name):
            raise CorpusError(f"{wav}: unexpected file name; expected p<speaker>_<number>.wav")
        utts[wav.stem] = wav
    return utts


def pair_split(root: Path, noisy_folder: str, clean_folder: str, expected: int, strict: bool) -> Pairs:
    """Pair the noisy and clean files of one split by name.

    Raises:
        CorpusError: if a file has no partner, or (with ``strict``) the count is not ``expected``.
    """
    noisy = _utterances(unpack(root, noisy_folder))
    clean = _utterances(unpack(root, clean_folder))
    for have, lack in ((noisy, clean), (clean, noisy)):
        orphans = sorted(have.keys() - lack.keys())
        if orphans:
            partner = (root / (clean_folder if lack is clean else noisy_folder)) / f"{orphans[0]}.wav"
            raise CorpusError(f"{partner}: missing ({len(orphans)} file(s) without partner in all)")
    check_count(root / noisy_folder, len(noisy), expected, strict)
    return {utt: (noisy[utt], clean[utt]) for utt in sorted(noisy)}


def _write_set(data_dir: Path, pairs: Pairs, wav_dir: Path, fs: int, nj: int) -> None:
    if not pairs:
        raise CorpusError(f"{data_dir}: no utterances for this set")
    srcs = [src for noisy, clean in pairs.values() for src in (noisy, clean)]
    paths = to_pcm16(((src, wav_dir / src.parent.name / src.name) for src in srcs), fs, nj)
    noisy, clean = paths[0::2], paths[1::2]
    write_data_dir(
        data_dir,
        wav={utt: str(p) for utt, p in zip(pairs, noisy)},
        spk1={utt: str(p) for utt, p in zip(pairs, clean)},
        utt2spk={utt: utt.split("_")[0] for utt in pairs},
    )


def prepare(root: Path, data_root: Path, wav_dir: Path, fs: int, nj: int, strict: bool) -> List[str]:
    """Unpack/check the corpus, resample it to ``fs`` under ``wav_dir``, write and validate data dirs.

    Returns:
        The names of the data dirs written under ``data_root``.
    """
    if not root.is_dir():
        raise CorpusError(f"{root}: no such folder; expected the VoiceBank+DEMAND corpus root")
    train = pair_split(root, NOISY_TRAIN, CLEAN_TRAIN, NUM_TRAIN, strict)
    test = pair_split(root, NOISY_TEST, CLEAN_TEST, NUM_TEST, strict)
    is_valid = {utt: utt.split("_")[0] in VALID_SPEAKERS for utt in train}
    sets = {
        TRAIN_SET: {utt: pair for utt, pair in train.items() if not is_valid[utt]},
        VALID_SET: {utt: pair for utt, pair in train.items() if is_valid[utt]},
        TEST_SET: test,
    }
    for name, pairs in sets.items():
        print(f"Preparing {data_root / name} ({len(pairs)} utterances)", flush=True)
        _write_set(data_root / name, pairs, wav_dir, fs, nj)
    validate_sets(data_root, list(sets), fs)
    return list(sets)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="corpus folder (folders or zips)")
    parser.add_argument("--data_dir", type=Path, default=Path("data"), help="where data dirs go")
    parser.add_argument("--wav_dir", type=Path, required=True, help="where resampled copies go")
    parser.add_argument("--fs", type=int, default=16000, help="sampling rate of the data dirs (Hz)")
    parser.add_argument("--nj", type=int, default=1, help="parallel processes for resampling")
    parser.add_argument(
        "--strict_counts", type=str2bool, default=True,
        help=f"require exactly {NUM_TRAIN} training and {NUM_TEST} test utterances",
    )
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    prepare(args.root, args.data_dir, args.wav_dir, args.fs, args.nj, args.strict_counts)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
