"""Paper-scale recipes, every stage 1-11, on fixture trees shaped like their corpora.

egs2/voicebank_demand/enh_kd1 and egs2/dns_ins20/enh_kd1 run with their own model and KD configs; only
epochs, iterations and batch size are cut on the command line. The fixtures have the corpora's layouts
and length profiles: VoiceBank+DEMAND at 48 kHz with 1.5-8 s utterances, most under 4 s (the configs'
chunk length); DNS 2020 with 30 s training mixtures synthesized by stage 1 and 10 s test clips.
A config that makes the chunk iterator drop utterances fails here.
"""
import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_data_dns import make_checkout
from test_data_voicebank import make_corpus

EGS = Path(__file__).resolve().parents[1] / "egs2"
KD = ("kd_l2", "kd_dispatch_l2", "kd_dispatch_l2_mssp", "kd_dfkd", "kd_dfkd_dispatch_mssp")
# The whole matrix (both recipes x both students x every KD config, each recipe its own teacher) runs
# with DISPATCH_DRYRUN=full. Otherwise (CI) each student meets each corpus shape once, with a different
# KD config each time: VoiceBank+DEMAND trains its teacher, the Conv-TasNet baseline and DFKD+DISPatch+MSSP
# students, then a DCCRN-CL student with L2+DISPatch+MSSP; DNS 2020 a Conv-TasNet student with DFKD from
# the VoiceBank+DEMAND teacher.
FULL = os.environ.get("DISPATCH_DRYRUN") == "full"
CI_KD = {"vb_conv_tasnet_small": ["kd_dfkd_dispatch_mssp"], "vb_dccrn_cl_small": ["kd_dispatch_l2_mssp"],
         "dns_conv_tasnet_small": ["kd_dfkd"]}
# Cut budget: one epoch of one utterance (the chunk iterator's --num_iters_per_epoch counts utterances),
# batches of 1, no data-loader workers (the configs' 4 cost more to start than the step on 2 CPU cores).
CUT = "--max_epoch 1 --batch_size 1 --num_iters_per_epoch 1 --num_workers 0"
COMMON = ["--ngpu", "0", "--nj", "2", "--inference_nj", "2", "--teacher_args", CUT, "--student_args", CUT]


def copy_recipe(src: Path, dst: Path) -> Path:
    """The recipe folder with its symlinks made absolute, so that it runs from ``dst`` as from ``src``."""
    dst.mkdir(parents=True)
    for item in src.iterdir():
        if item.name in ("data", "dump", "exp", "downloads"):
            continue
        if item.is_symlink():
            (dst / item.name).symlink_to(item.resolve())
        elif item.is_dir():
            copy_recipe(item, dst / item.name)
        else:
            shutil.copy2(item, dst / item.name)
    return dst


def run_recipe(recipe: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    proc = subprocess.run(["./run.sh", *COMMON, *args], cwd=recipe, env={**os.environ, **env, "PATH": path},
                          capture_output=True, text=True, timeout=5400)
    return proc


def check_run(recipe: Path, proc: subprocess.CompletedProcess, experiments, test_sets) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "Successfully finished" in out
    for name in experiments:
        log = (recipe / "exp" / name / "log" / "train.log").read_text()
        # Nothing dropped: our report says so, and espnet2's per-utterance warning never appears.
        assert re.search(r"chunk iterator, train set: \d+ utterances .*, 0 dropped", log), log[-3000:]
        assert re.search(r"chunk iterator, valid set: \d+ utterances .*, 0 dropped", log), log[-3000:]
        assert "shorter than any candidates of chunk-length" not in log
        assert (recipe / "exp" / name / "valid.si_snr_loss.best.pth").exists()
    results = (recipe / "RESULTS.md").read_text()
    for dset in test_sets:
        assert f"## {dset}" in results or dset in results
    # The metrics table of each test set (RESULTS.md has other tables with a "model" column too).
    metrics = ("PESQ_WB", "STOI", "SI_SDR", "CSIG", "DNSMOS_SIG", "DNSMOS_BAK", "DNSMOS_OVRL")
    headers = [line for line in results.splitlines() if line.startswith("| model |") and "PESQ_WB" in line]
    assert len(headers) >= len(test_sets), results[:3000]
    for header in headers:
        assert all(metric in header for metric in metrics), header


# About VoiceBank+DEMAND's profile: mean near 3 s, most under 4 s (the configs' chunk), a tail to 8 s.
VB_SECONDS = (1.6, 2.3, 7.9, 2.7, 3.0, 3.4, 3.8, 4.6, 6.2, 2.1)


def voicebank_seconds():
    durations = itertools.cycle(VB_SECONDS)
    return lambda rng: next(durations)


@pytest.fixture(scope="module")
def voicebank(tmp_path_factory):
    root = tmp_path_factory.mktemp("vbd")
    # 3 training speakers, the two validation speakers (p226, p287) and the two test speakers.
    corpus = make_corpus(root / "corpus", train={"p226": 1, "p230": 3, "p239": 3, "p268": 3, "p287": 1},
                         test={"p232": 2, "p257": 2}, seconds=voicebank_seconds())
    recipe = copy_recipe(EGS / "voicebank_demand" / "enh_kd1", root / "enh_kd1")
    return recipe, {"VOICEBANK_DEMAND": str(corpus)}


VB_DATA = ["--local_data_opts", "--strict_counts false --download false --nj 2"]


def test_voicebank_fixture_is_shaped_like_the_corpus(voicebank):
    _, env = voicebank
    import soundfile as sf
    infos = [sf.info(f) for f in Path(env["VOICEBANK_DEMAND"]).glob("*_wav/*.wav")]
    durations = [i.duration for i in infos]
    assert {i.samplerate for i in infos} == {48000}
    assert min(durations) >= 1.5 and max(durations) <= 8.0
    assert np.mean(np.array(durations) < 4.0) > 0.6 and max(durations) > 4.0


def kd_args(kds) -> list:
    return ["--kd_configs", " ".join(f"conf/kd/{kd}.yaml" for kd in kds)]


def test_voicebank_all_stages_both_students(voicebank):
    recipe, env = voicebank
    kds = KD if FULL else CI_KD["vb_conv_tasnet_small"]
    proc = run_recipe(recipe, env, *VB_DATA, "--stop_stage", "11", *kd_args(kds))
    conv = ["teacher_conv_tasnet_teacher", "student_conv_tasnet_small"] + [f"student_conv_tasnet_small_{kd}" for kd in kds]
    check_run(recipe, proc, conv, ["tt_2spk"])
    # DCCRN-CL with the same teacher: stage 4 finds it trained, stage 7 its outputs enhanced.
    kds = KD if FULL else CI_KD["vb_dccrn_cl_small"]
    skip = [] if FULL else ["--skip_baseline", "true"]
    proc = run_recipe(recipe, env, *VB_DATA, "--stage", "4", "--stop_stage", "11", *kd_args(kds), *skip,
                      "--student_config", "conf/tuning/train_enh_dccrn_cl_small.yaml")
    dccrn = ([] if skip else ["student_dccrn_cl_small"]) + [f"student_dccrn_cl_small_{kd}" for kd in kds]
    check_run(recipe, proc, dccrn, ["tt_2spk"])
    for name in conv + dccrn:
        assert list((recipe / "exp" / name).glob("packed_*.zip")), name


def test_voicebank_config_that_drops_short_utterances_is_refused(voicebank):
    recipe, env = voicebank
    if not (recipe / "dump").exists():
        assert run_recipe(recipe, env, *VB_DATA, "--stop_stage", "3").returncode == 0
    proc = run_recipe(recipe, env, "--stage", "5", "--stop_stage", "5", "--student_tag", "dropping",
                      "--student_args", f"{CUT} --chunk_discard_short_samples true")
    assert proc.returncode != 0
    log = (recipe / "exp" / "dropping" / "log" / "train.log").read_text()
    assert re.search(r"enh_kd_train: error: the chunk iterator would drop \d+ of \d+ utterances", log)
    assert "chunk_length=64000" in log and "--chunk_max_dropped_share" in log


def test_dns_all_stages(tmp_path, voicebank):
    # Clean clips of 12 s are concatenated into 30 s mixtures; 10 s test clips, as in the challenge.
    checkout = make_checkout(tmp_path / "DNS-Challenge", clean_seconds=12.0, noise_seconds=10.0,
                             test_seconds=10.0, test_ids=(0, 7))
    recipe = copy_recipe(EGS / "dns_ins20" / "enh_kd1", tmp_path / "enh_kd1")
    env = {"DNS2020": str(checkout)}
    # 6 mixtures of 30 s (5 train, 1 valid), each 14 chunks of 4 s: batches of 7 keep one epoch to 2 steps.
    cut = CUT.replace("--batch_size 1", "--batch_size 7")
    data = ["--local_data_opts", "--total_hours 0.05 --strict_counts false --nj 2",
            "--teacher_args", cut, "--student_args", cut]
    test_sets = ["tt_synthetic_no_reverb", "tt_synthetic_with_reverb"]
    students = ["conv_tasnet_small", "dccrn_cl_small"] if FULL else ["conv_tasnet_small"]
    teacher, skip = [], []
    if not FULL:  # CI: the teacher the VoiceBank+DEMAND test trained (when it ran), no baseline
        vb_teacher = voicebank[0] / "exp" / "teacher_conv_tasnet_teacher"
        if (vb_teacher / "valid.si_snr_loss.best.pth").exists():
            teacher = ["--teacher_model", str(vb_teacher)]
        skip = ["--skip_baseline", "true"]
    for i, student in enumerate(students):
        kds = KD if FULL else CI_KD[f"dns_{student}"]
        first = ["--stop_stage", "11"] if i == 0 else ["--stage", "4", "--stop_stage", "11"]
        proc = run_recipe(recipe, env, *data, *first, *teacher, *skip, *kd_args(kds),
                          "--student_config", f"conf/tuning/train_enh_{student}.yaml")
        names = ([] if skip else [f"student_{student}"]) + [f"student_{student}_{kd}" for kd in kds]
        check_run(recipe, proc, (["teacher_conv_tasnet_teacher"] if i == 0 and not teacher else []) + names, test_sets)
    import soundfile as sf
    assert {round(sf.info(p.split()[1]).duration) for p in
            (recipe / "dump" / "raw" / "tr_synthetic" / "wav.scp").read_text().splitlines()} == {30}


@pytest.mark.parametrize("config", sorted((EGS / "voicebank_demand" / "enh_kd1" / "conf" / "tuning").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_paper_config_keeps_every_utterance(config):
    """The check training runs first, on each corpus' length profile: VoiceBank+DEMAND and DNS 2020."""
    import yaml

    from dispatch.chunking import chunk_coverage

    conf = yaml.safe_load(config.read_text())
    for lengths in ([int(16000 * s) for s in VB_SECONDS], [16000 * 30] * 3):
        cov = chunk_coverage(lengths, conf["chunk_length"], batch_size=1,
                             discard_short_samples=conf.get("chunk_discard_short_samples", True))
        assert cov.num_dropped == 0, f"{config.name}: {cov.describe(16000)}"
