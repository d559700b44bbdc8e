"""Fault matrix (issue 6): one case per failure mode, each checking what the user is told.

1. data (formatting stage): broken lists, corrupt audio, wrong rate, noisy/clean length mismatch,
   utterances too short for the KD STFT;
2. teacher and student disagree: sampling rate, number of outputs;
3. loss guards: silence and zero-energy patches, an empty selection, a NaN batch;
4. resume: SIGKILL of training, killed formatting (alone and in enh_kd.sh), atomic writes;
5. config errors: kd_loss name and options, topk, patch sizes, teacher path, zoo name.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from conftest import FS, data_args, run_module, write_data_dir
from test_datadir import corrupt_empty, corrupt_garbage, corrupt_truncate
from test_enh_kd_script import enh_kd, recipe  # noqa: F401  (recipe: the tmp recipe fixture)

from dispatch.bin import format_data
from dispatch.bin import validate_data_dir as validate_cli
from dispatch.checkpoint import restore_epoch_snapshot
from dispatch.data.atomic import atomic_path, write_text_atomic
from dispatch.data.datadir import read_scp, validate_data_dir
from dispatch.distances import DISTANCES
from dispatch.losses import DFKDLoss, DISPatchLoss, build_kd_loss

MSSP = {"bands": [[10, 1], [40, 1]], "band_edges": "crossover"}
CRITERION = [{"name": "si_snr", "conf": {"eps": 1.0e-7}, "wrapper": "fixed_order", "wrapper_conf": {"weight": 1.0}}]
MODEL = {  # a small STFT + BLSTM mask model, as teacher or student
    "fs": FS,
    "encoder": "stft", "encoder_conf": {"n_fft": 256, "hop_length": 64},
    "decoder": "stft", "decoder_conf": {"n_fft": 256, "hop_length": 64},
    "separator": "rnn",
    "separator_conf": {"rnn_type": "blstm", "num_spk": 1, "nonlinear": "relu", "layer": 1, "unit": 16, "dropout": 0.0},
    "criterions": CRITERION,
    "batch_type": "folded", "batch_size": 4, "optim": "adam", "optim_conf": {"lr": 1e-3}, "max_epoch": 2,
    "best_model_criterion": [["valid", "loss", "min"]], "keep_nbest_models": 1, "seed": 0,
    "num_att_plot": 0, "use_tensorboard": False, "use_matplotlib": False,
}
STUDENT = {**MODEL, "kd_loss": "dispatch", "kd_loss_conf": {"topk": 0.8, **MSSP}}
KD_LOSS_CASES = [  # (registry name, kd_loss_conf): every patch distance, DFKD with and without MSSP, SI-SNR
    *[("dispatch", {"distance": d}) for d in sorted(DISTANCES)],
    ("dispatch", {"distance": "mag_l2", **MSSP}),
    ("dfkd", {}),
    ("dfkd", {"bands": MSSP["bands"], "selection": "topk"}),
    ("si_snr", {}),
]


def case_id(case) -> str:
    name, conf = case
    return "-".join([name, *(f"{k}={v}" for k, v in conf.items() if k != "band_edges")]).replace(" ", "")


def wav_path(data_dir: Path, utt: str, kind: str) -> Path:
    """Audio file of conftest.write_data_dir: kind is 'noisy' (wav.scp) or 'clean' (spk1.scp)."""
    return data_dir / "wav" / f"{utt}_{kind}.wav"


def format_dir(src: Path, dst: Path, capsys, *options) -> SimpleNamespace:
    """Stage 2 (format_data's CLI) in this process: exit code and stderr."""
    code = format_data.main([str(src), str(dst), "--fs", str(FS), *map(str, options)])
    return SimpleNamespace(code=code, err=capsys.readouterr().err)


@pytest.fixture
def src(tmp_path) -> Path:
    """A 4-utterance source data dir: utterances src_000 .. src_003."""
    return write_data_dir(tmp_path, "src", 4, seed=0)


# ---------------------------------------------------------------------------------- 1. data
@pytest.mark.parametrize("fault, message", [
    ("unsorted", "wav.scp: utterance 'src_002': key not sorted (LC_ALL=C): comes after 'src_003'"),
    ("utt2spk_missing", "utt2spk: utterance 'src_003' of wav.scp is missing"),
    ("spk1_extra", "spk1.scp: utterance 'src_004' is not in wav.scp"),
])
def test_1a_lists_with_unsorted_or_different_keys_stop_formatting(src, tmp_path, capsys, fault, message):
    lines = {n: (src / n).read_text().splitlines(keepends=True) for n in ("wav.scp", "spk1.scp", "utt2spk")}
    if fault == "unsorted":
        (src / "wav.scp").write_text("".join(reversed(lines["wav.scp"])))
    elif fault == "utt2spk_missing":
        (src / "utt2spk").write_text("".join(lines["utt2spk"][:-1]))
    else:
        (src / "spk1.scp").write_text("".join(lines["spk1.scp"]) + f"src_004 {wav_path(src, 'src_000', 'clean')}\n")
    result = format_dir(src, tmp_path / "dump", capsys)
    assert result.code == 1
    assert f"format_data: {src}: {message}" in result.err
    assert not (tmp_path / "dump").exists()


def remove(path: Path) -> str:
    path.unlink()
    return "no such file"


@pytest.mark.parametrize("corrupt", [corrupt_truncate, corrupt_garbage, corrupt_empty, remove])
def test_1b_corrupt_audio_is_named_with_its_utterance_at_formatting(src, tmp_path, capsys, corrupt):
    path = wav_path(src, "src_002", "clean")
    expected = corrupt(path)
    result = format_dir(src, tmp_path / "dump", capsys)
    assert result.code == 1
    assert f"{src}: 1 audio problem(s)" in result.err
    assert f"spk1.scp: utterance 'src_002': {path}: {expected}" in result.err
    assert "Traceback" not in result.err and not (tmp_path / "dump").exists()


def test_1b_nan_samples_in_a_float_wav_stop_formatting(src, tmp_path, capsys):
    path = wav_path(src, "src_001", "noisy")
    data = sf.read(path)[0]
    data[FS // 2: FS // 2 + 10] = np.nan
    sf.write(path, data, FS, subtype="FLOAT")  # float wavs are converted, so their samples are read
    result = format_dir(src, tmp_path / "dump", capsys)
    assert result.code == 1
    assert f"{path}: 10 sample(s) are NaN or infinite, the first at 0.500 s" in result.err
    assert "Traceback" not in result.err and not (tmp_path / "dump" / "wav.scp").exists()


def test_1c_audio_is_checked_at_the_recipe_sample_rate(src, tmp_path, capsys):
    # A source at another rate is resampled by formatting ...
    for kind in ("noisy", "clean"):
        path = wav_path(src, "src_001", kind)
        data, rate = sf.read(path)
        sf.write(path, data[::2], rate // 2, subtype="PCM_16")
    dump = tmp_path / "dump"
    assert format_dir(src, dump, capsys).code == 0
    assert validate_data_dir(dump, fs=FS) == 4
    # ... and a formatted dir holding a file at another rate is refused, naming file and utterance.
    stray = dump / "stray_8k.wav"
    sf.write(stray, np.zeros(FS // 2), FS // 2, subtype="PCM_16")
    (dump / "spk1.scp").write_text((dump / "spk1.scp").read_text().replace(
        read_scp(dump / "spk1.scp")["src_003"], str(stray)))
    assert validate_cli.main([str(dump), "--fs", str(FS)]) == 1
    assert f"spk1.scp: utterance 'src_003': {stray}: sampled at 8000 Hz, expected {FS} Hz" in capsys.readouterr().err


def test_1d_noisy_and_clean_of_different_lengths_stop_formatting(src, tmp_path, capsys):
    clean = wav_path(src, "src_001", "clean")
    data = sf.read(clean)[0]
    sf.write(clean, data[:-100], FS, subtype="PCM_16")
    result = format_dir(src, tmp_path / "dump", capsys)
    assert result.code == 1
    assert f"spk1.scp: utterance 'src_001': {clean}: {len(data) - 100} samples, but wav.scp has {len(data)}" in result.err


def test_1e_utterances_shorter_than_min_duration_are_dropped_with_a_count(src, tmp_path, capsys, caplog):
    for kind in ("noisy", "clean"):  # 10 ms: shorter than the KD STFT window (512 samples)
        sf.write(wav_path(src, "src_002", kind), 0.1 * np.ones(FS // 100), FS, subtype="PCM_16")
    dump = tmp_path / "dump"
    assert format_dir(src, dump, capsys, "--min_duration", 0.1).code == 0
    assert f"{src}: dropped 1 utterance(s) shorter than 0.1 s" in caplog.text
    assert sorted(read_scp(dump / "wav.scp")) == ["src_000", "src_001", "src_003"]
    assert validate_data_dir(dump, fs=FS) == 3


@pytest.mark.parametrize("case", KD_LOSS_CASES, ids=case_id)
def test_1f_a_batch_shorter_than_the_kd_stft_is_padded_not_fatal(case):
    name, conf = case
    loss = build_kd_loss(name, **conf)
    student, teacher, clean = torch.randn(3, 2, 100).unbind(0)  # 100 samples < n_fft // 2 = 256
    student.requires_grad_()
    value = loss(student, teacher, clean)
    (grad,) = torch.autograd.grad(value, student)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    if isinstance(loss, DISPatchLoss):  # the same as explicit zero-padding with the true lengths
        padded = [torch.nn.functional.pad(x, (0, loss.n_fft - 100)) for x in (student, teacher, clean)]
        assert value.item() == pytest.approx(loss(*padded, lengths=torch.tensor([100, 100])).item(), rel=1e-6)


# ------------------------------------------------------------------- config errors, in this process
def make_teacher(exp: Path, **changes) -> Path:
    """A (random) espnet2 enhancement model in an experiment dir: config.yaml + valid.loss.best.pth."""
    from dispatch.task import EnhancementKDTask  # espnet2: imported only by the tests that need it

    conf = {**MODEL, **changes}
    exp.mkdir(parents=True)
    (exp / "train.yaml").write_text(yaml.safe_dump(conf))
    args = EnhancementKDTask.get_parser().parse_args(["--config", str(exp / "train.yaml")])
    torch.save(EnhancementKDTask.build_model(args).state_dict(), exp / "valid.loss.best.pth")
    (exp / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    return exp


def refused_training(tmp_path: Path, data_root: Path, conf: dict, *options) -> str:
    """Run the KD training CLI (in this process) on a config it must refuse; return its message.

    Nothing may have been written: the refusal comes before any work.
    """
    from dispatch.task import EnhancementKDTask

    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump(conf))
    out = tmp_path / "exp" / "student"
    with pytest.raises(SystemExit) as stop:
        EnhancementKDTask.main(cmd=["--config", str(config), "--output_dir", str(out), *map(str, options),
                                    *data_args(data_root)])
    assert not out.exists()
    return str(stop.value.code)


# ------------------------------------------------------------------- 2. teacher vs student
def test_2a_teacher_at_another_sample_rate_stops_naming_both_configs(tmp_path, data_root):
    teacher = make_teacher(tmp_path / "teacher")
    message = refused_training(tmp_path, data_root, {**STUDENT, "fs": 8000}, "--teacher_model", teacher)
    assert message == (f"enh_kd_train: error: teacher {teacher / 'config.yaml'} runs at fs={FS} but the student "
                       f"config has fs=8000 ({tmp_path / 'student.yaml'}): they must agree")


def test_2b_teacher_with_another_number_of_outputs_stops_naming_both_configs(tmp_path, data_root):
    teacher = make_teacher(tmp_path / "teacher", separator_conf={**MODEL["separator_conf"], "num_spk": 2})
    message = refused_training(tmp_path, data_root, STUDENT, "--teacher_model", teacher)
    assert message == (f"enh_kd_train: error: KD needs single-output models, but the teacher "
                       f"{teacher / 'config.yaml'} has num_spk=2")


def test_2b_a_student_with_several_outputs_stops_naming_its_config(tmp_path, data_root):
    student = {**STUDENT, "separator_conf": {**STUDENT["separator_conf"], "num_spk": 2}}
    message = refused_training(tmp_path, data_root, student, "--teacher_model", make_teacher(tmp_path / "teacher"))
    assert message == (f"enh_kd_train: error: kd_loss={STUDENT['kd_loss']}: KD needs single-output models, but "
                       f"the student config ({tmp_path / 'student.yaml'}) has num_spk=2")


# ------------------------------------------------------------------------------ 3. loss guards
@pytest.mark.parametrize("case", KD_LOSS_CASES, ids=case_id)
def test_3a_silence_and_zero_energy_patches_give_finite_losses(case):
    name, conf = case
    loss = build_kd_loss(name, **conf)
    speech = torch.randn(8000)
    speech[2000:6000] = 0.0  # zero-energy patches inside an utterance
    silence = torch.zeros(8000)
    student = torch.stack([silence, speech, silence, silence]).requires_grad_()
    teacher = torch.stack([silence, 0.5 * speech, speech, silence])
    clean = torch.stack([silence, silence, speech, speech])
    value = loss(student, teacher, clean)
    (grad,) = torch.autograd.grad(value, student)
    assert torch.isfinite(value), value
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("loss", [DISPatchLoss(selection="positive"), DISPatchLoss(selection="topk_positive"),
                                  DFKDLoss(bands=MSSP["bands"], selection="topk_positive")],
                         ids=["dispatch-positive", "dispatch-topk_positive", "dfkd-mssp-topk_positive"])
def test_3b_an_empty_selection_gives_a_differentiable_zero(loss):
    student = torch.randn(2, 8000, requires_grad=True)
    value = loss(student, student.detach(), torch.randn(2, 8000))  # teacher = student: no KGS > 0
    (grad,) = torch.autograd.grad(value, student)
    assert value.item() == 0.0 and value.requires_grad
    assert not loss.last_selection.any() and loss.last_stats["selected"] == 0
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory) -> SimpleNamespace:
    """A KD student killed (SIGKILL) after its first epoch, then the same command run again.

    One training utterance is a float wav with NaN samples, so each epoch has one NaN batch. The
    teacher outputs come as a cached stream (the clean references), which needs no teacher model.
    """
    root = tmp_path_factory.mktemp("nan_batch")
    for name, n in (("train", 8), ("valid", 2)):
        write_data_dir(root, name, n, seed=len(name))
    noisy = wav_path(root / "train", "train_003", "noisy")
    data = sf.read(noisy)[0]
    data[1000:1100] = np.nan
    sf.write(noisy, data, FS, subtype="FLOAT")
    config = root / "student.yaml"
    config.write_text(yaml.safe_dump({**STUDENT, "keep_nbest_models": 2}))  # keeps both epoch snapshots
    out = root / "exp"
    streams = [f"--{m}_data_path_and_name_and_type={root / m / 'spk1.scp'},teacher_ref1,sound" for m in ("train", "valid")]
    args = ["--config", config, "--output_dir", out, "--resume", "true", *data_args(root), *streams]  # as enh_kd.sh

    killed_log = root / "killed.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with open(killed_log, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dispatch.bin.enh_kd_train", *map(str, args)],
                                stdout=log, stderr=log, env=env)
        deadline = time.time() + 120
        while not (out / "1epoch.pth").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / "1epoch.pth").exists(), killed_log.read_text()[-3000:]
    done = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)["reporter"]["epoch"]
    first_epoch = (out / "1epoch.pth").read_bytes()
    resumed = run_module("dispatch.bin.enh_kd_train", *args)  # the very same command
    return SimpleNamespace(out=out, done=done, first_epoch=first_epoch, killed_log=killed_log.read_text(),
                           resumed_log=resumed.stderr)


def test_3c_a_nan_batch_is_skipped_and_the_weights_stay_finite(killed_and_resumed):
    run = killed_and_resumed
    for log in (run.killed_log, run.resumed_log):
        assert "The grad norm is nan. Skipping updating the model." in log
    states = [torch.load(run.out / f"{epoch}epoch.pth", map_location="cpu") for epoch in (1, 2)]
    for state in states:
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert any(not torch.equal(v, states[1][k]) for k, v in states[0].items()), "the finite batches must still train"
    valid = run.resumed_log.split("2epoch results:")[1].splitlines()[0].split("[valid]")[1]
    assert "loss=nan" not in valid and "kd_loss=" in valid


# ---------------------------------------------------------------------------------- 4. resume
def test_4a_a_killed_training_resumes_after_its_last_finished_epoch(killed_and_resumed):
    run = killed_and_resumed
    assert run.done == 1, "the kill came after the last epoch: nothing was left to resume"
    assert "The training was resumed using" in run.resumed_log
    assert "2epoch results" in run.resumed_log and "1epoch results" not in run.resumed_log
    assert (run.out / "1epoch.pth").read_bytes() == run.first_epoch
    assert "The training was finished at 2 epochs" in run.resumed_log


def test_4b_formatting_skips_finished_output_and_redoes_a_killed_run(src, tmp_path, capsys, caplog, monkeypatch):
    caplog.set_level("INFO")
    dump = tmp_path / "dump"
    assert format_dir(src, dump, capsys).code == 0
    assert format_dir(src, dump, capsys).code == 0 and "formatted already" in caplog.text

    # Killed while writing its lists: the stamp (written last) is missing, wav.scp is cut short.
    (dump / format_data.STAMP).unlink()
    (dump / "wav.scp").write_text((dump / "wav.scp").read_text().splitlines()[0] + "\n")
    caplog.clear()
    assert format_dir(src, dump, capsys).code == 0 and "formatted already" not in caplog.text
    assert validate_data_dir(dump, fs=FS) == 4

    # Killed while redoing with other options: the stamp of the earlier run must not vouch for it.
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(format_data, "convert_pairs", killed)
    with pytest.raises(KeyboardInterrupt):
        format_dir(src, dump, capsys, "--min_duration", 0.5)
    monkeypatch.undo()
    caplog.clear()
    assert format_dir(src, dump, capsys).code == 0 and "formatted already" not in caplog.text
    assert (dump / format_data.STAMP).exists()


def test_4c_enh_kd_sh_rerun_redoes_partial_stage_outputs(recipe):  # noqa: F811
    assert enh_kd(recipe, "--stage", "1", "--stop_stage", "3").returncode == 0
    tr = recipe / "dump" / "raw" / "tr"
    shape = recipe / "exp" / "stats_16000" / "train" / "speech_mix_shape"
    (tr / format_data.STAMP).unlink()  # killed during stage 2 on tr ...
    (tr / "wav.scp").write_text((tr / "wav.scp").read_text().splitlines()[0] + "\n")
    shape.write_text("")  # ... and a shape file cut short
    again = enh_kd(recipe, "--stage", "2", "--stop_stage", "3")
    log = again.stdout + again.stderr
    assert again.returncode == 0, log
    assert "dump/raw/cv: formatted already" in log and "dump/raw/tr: formatted already" not in log
    assert validate_data_dir(tr, fs=FS) == 3
    assert len(shape.read_text().splitlines()) == 3


def test_4d_an_interrupted_write_keeps_the_old_file_and_a_lost_snapshot_is_restored(tmp_path):
    target = tmp_path / "spk1.scp"
    write_text_atomic(target, "utt1 a.wav\n")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("utt1 b.wav\nutt2")
        raise KeyboardInterrupt  # killed mid-write
    assert target.read_text() == "utt1 a.wav\n" and sorted(tmp_path.iterdir()) == [target]

    # Killed between espnet2's checkpoint.pth and <N>epoch.pth: the snapshot comes back on resume.
    weights = {"separator.w": torch.arange(3.0)}
    torch.save({"reporter": {"epoch": 3}, "model": weights}, tmp_path / "checkpoint.pth")
    restore_epoch_snapshot(tmp_path)
    assert torch.equal(torch.load(tmp_path / "3epoch.pth")["separator.w"], weights["separator.w"])


# -------------------------------------------------------------------------- 5. config errors
@pytest.mark.parametrize("changes, message", [
    ({"kd_loss": "patchy"}, "kd_loss='patchy' is unknown; choose one of ['dfkd', 'dispatch', 'si_snr']"),
    ({"kd_loss_conf": {"top_k": 0.5}}, ("kd_loss=dispatch: kd_loss_conf has unknown option(s) ['top_k']; "
                                        "options of DISPatchLoss: ['distance', 'patch', 'bands', 'band_edges', 'topk'")),
    ({"kd_loss_conf": {"distance": "l3"}}, "kd_loss=dispatch: kd_loss_conf: distance='l3' is unknown; choose one of"),
], ids=["kd_loss", "kd_loss_conf-key", "distance"])
def test_5a_unknown_kd_loss_or_option_stops_before_training(tmp_path, data_root, changes, message):
    assert message in refused_training(tmp_path, data_root, {**STUDENT, **changes})


@pytest.mark.parametrize("topk", [0.0, 1.5, -0.2])
def test_5b_topk_outside_0_1_stops_before_training(tmp_path, data_root, topk):
    message = refused_training(tmp_path, data_root, {**STUDENT, "kd_loss_conf": {"topk": topk}})
    assert f"kd_loss=dispatch: kd_loss_conf: topk={topk}: the selected fraction must lie in (0, 1]" in message


@pytest.mark.parametrize("kd_loss, conf, message", [
    ("dispatch", {"patch": [300, 1]}, "patch=(300, 1): 300 bins exceed the 257 bins of the KD STFT (n_fft=512)"),
    ("dispatch", {"bands": [[10, 1], [40, 1]], "band_edges": [7800]},
     "bands[1]=(40, 1): 40 bins do not fit band 1, which has 7 bins (250..256)"),
    ("dfkd", {"bands": [[10, 1], [300, 1]]}, "bands[1]=(300, 1): 300 bins exceed the 257 STFT bins"),
    ("dispatch", {"patch": [0, 1]}, "patch=[0, 1]: patch sizes must be positive integers"),
], ids=["patch-over-stft", "band-over-fixed-edge", "band-over-stft", "patch-empty"])
def test_5c_patch_sizes_that_do_not_fit_stop_before_training(tmp_path, data_root, kd_loss, conf, message):
    assert message in refused_training(tmp_path, data_root, {**STUDENT, "kd_loss": kd_loss, "kd_loss_conf": conf})


def test_5d_a_teacher_path_that_does_not_exist_stops_before_training(tmp_path, data_root):
    missing = tmp_path / "exp" / "no_teacher"
    message = refused_training(tmp_path, data_root, STUDENT, "--teacher_model", missing)
    assert message == f"enh_kd_train: error: teacher_model={missing}: no such experiment dir or packed zip"
    empty = tmp_path / "exp" / "untrained"
    empty.mkdir(parents=True)
    (empty / "config.yaml").write_text(yaml.safe_dump(MODEL))
    message = refused_training(tmp_path, data_root, STUDENT, "--teacher_model", empty)
    assert f"teacher_model={empty}: no weights found (looked for valid.*.ave.pth" in message


def test_5e_a_zoo_name_that_cannot_be_resolved_stops_fast(tmp_path, data_root):
    start = time.time()
    message = refused_training(tmp_path, data_root, STUDENT, "--teacher_model", "espnet/nonexistent_model")
    assert message.startswith("enh_kd_train: error: teacher_model=espnet/nonexistent_model: not an experiment dir "
                              "or zip here, and espnet_model_zoo cannot resolve it")
    assert "give an experiment dir or a packed zip" in message
    assert time.time() - start < 60
