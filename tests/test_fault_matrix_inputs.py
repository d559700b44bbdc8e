"""Fault matrix, part 2 (issue 14 B): bad inputs refused at the stage that receives them.

6. configs: every KD yaml (names, types, ranges, weights) checked before stage 1, and by enh_kd_train;
7. a given teacher is loaded at stage 4 (truncated checkpoint named there, not at stage 10);
8. audio at the door (stage 2): channels, float peaks above full scale, Kaldi segments, ark/pipe
   entries, non-UTF-8 lists, a dump made at another rate.
"""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import FS, write_data_dir
from test_enh_kd_script import enh_kd, recipe  # noqa: F401  (recipe: the tmp recipe fixture)
from test_fault_matrix import STUDENT, format_dir, make_teacher, refused_training, wav_path

from dispatch.bin import check_kd_configs, format_data
from dispatch.data.datadir import read_scp, validate_data_dir


@pytest.fixture
def src(tmp_path) -> Path:
    """A 4-utterance source data dir: utterances src_000 .. src_003 (16-bit PCM at FS)."""
    return write_data_dir(tmp_path, "src", 4, seed=0)


GOOD_KD = {"kd_loss": "dispatch", "kd_loss_conf": {"distance": "mag_l2", "topk": 0.8}, "kd_weight": 10.0}


def write_yaml(path: Path, conf: dict) -> Path:
    path.write_text(yaml.safe_dump(conf))
    return path


# ----------------------------------------------------------------------- 6. configs before stage 1
BAD_KD = [  # (name, KD yaml, what the message must say)
    ("top_k", {**GOOD_KD, "kd_loss_conf": {"top_k": 0.5}},
     "kd_loss=dispatch: kd_loss_conf has unknown option(s) ['top_k']"),
    ("topk-string", {**GOOD_KD, "kd_loss_conf": {"topk": "0.5"}},
     "kd_loss=dispatch: kd_loss_conf: topk='0.5': expected a number"),
    ("topk-bool", {**GOOD_KD, "kd_loss_conf": {"topk": True}}, "kd_loss_conf: topk=True: expected a number"),
    ("n_fft-float", {**GOOD_KD, "kd_loss_conf": {"n_fft": 512.0}}, "kd_loss_conf: n_fft=512.0: expected an integer"),
    ("topk-range", {**GOOD_KD, "kd_loss_conf": {"topk": 1.5}}, "topk=1.5: the selected fraction must lie in (0, 1]"),
    ("n_fft-zero", {**GOOD_KD, "kd_loss_conf": {"n_fft": 0}}, "kd_loss_conf: n_fft=0: must be a positive integer"),
    ("distance_conf-key", {**GOOD_KD, "kd_loss_conf": {"distance": "log_mag_l1", "distance_conf": {"eps": 0.1}}},
     "distance=log_mag_l1: distance_conf has unknown option(s) ['eps']"),
    ("kd_weight-negative", {**GOOD_KD, "kd_weight": -1}, "kd_weight=-1: a loss weight must be a finite number >= 0"),
    ("kd_weight-string", {**GOOD_KD, "kd_weight": "1.0"}, "kd_weight='1.0': expected a number"),
    ("weights-zero", {**GOOD_KD, "kd_weight": 0, "task_weight": 0.0},
     "kd_weight=0 and task_weight=0: the total loss would be 0"),
    ("key-typo", {**GOOD_KD, "kd_wieght": 1.0},
     "unknown key 'kd_wieght' (not an option of enh_kd_train); did you mean 'kd_weight'?"),
    ("no-kd_loss", {"kd_weight": 1.0}, "no kd_loss: a KD config must name its KD loss"),
]


def test_6a_every_kd_yaml_is_checked_and_each_problem_names_its_file_and_key(tmp_path, capsys):
    student = write_yaml(tmp_path / "student.yaml", {"fs": 16000, "separator": "rnn"})
    good = write_yaml(tmp_path / "good.yaml", GOOD_KD)
    bad = [write_yaml(tmp_path / f"{name}.yaml", conf) for name, conf, _ in BAD_KD]
    assert check_kd_configs.main(["--student_config", str(student), str(good)]) == 0
    capsys.readouterr()
    assert check_kd_configs.main(["--student_config", str(student), str(good), *map(str, bad)]) == 1
    err = capsys.readouterr().err
    for path, (_, _, message) in zip(bad, BAD_KD):
        assert f"check_kd_configs: {path}: " in err and message in err, (path, err)
    assert f"{good}:" not in err
    assert f"check_kd_configs: {len(BAD_KD)} problem(s)" in err


def test_6a_a_broken_yaml_or_student_config_key_is_named(tmp_path, capsys):
    student = write_yaml(tmp_path / "student.yaml", {"seperator": "rnn"})
    broken = tmp_path / "broken.yaml"
    broken.write_text("kd_loss: dispatch\nkd_loss_conf: {topk: 0.8\n")
    assert check_kd_configs.main(["--student_config", str(student), str(broken)]) == 1
    err = capsys.readouterr().err
    assert f"{student}: unknown key 'seperator' (not an option of enh_kd_train); did you mean 'separator'?" in err
    assert f"{broken}: cannot be read as yaml" in err


def test_6a_a_student_config_with_kd_of_its_own_is_checked_too(tmp_path, capsys):
    student = write_yaml(tmp_path / "student.yaml", {"kd_loss": "dfkd", "kd_loss_conf": {"beta": "0.5"}})
    assert check_kd_configs.main(["--student_config", str(student)]) == 1
    assert f"{student}: kd_loss=dfkd: kd_loss_conf: beta='0.5': expected a number" in capsys.readouterr().err


def test_6b_enh_kd_sh_stops_before_stage_1_on_a_bad_kd_yaml(recipe):  # noqa: F811
    write_yaml(recipe / "conf" / "kd_good.yaml", GOOD_KD)
    write_yaml(recipe / "conf" / "kd_bad.yaml", {**GOOD_KD, "kd_loss_conf": {"top_k": 0.5}})
    proc = enh_kd(recipe, "--kd_configs", "conf/kd_good.yaml conf/kd_bad.yaml")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2, log
    assert "check_kd_configs: conf/kd_bad.yaml: kd_loss=dispatch: kd_loss_conf has unknown option(s) ['top_k']" in log
    assert "Error: fix the configs above (nothing was run)" in log
    assert not (recipe / "calls.txt").exists() and "Stage 1" not in log


@pytest.mark.parametrize("changes, message", [
    ({"kd_weight": -1.0}, "kd_weight=-1.0: a loss weight must be a finite number >= 0"),
    ({"kd_weight": 0.0, "task_weight": 0.0}, "kd_weight=0 and task_weight=0: the total loss would be 0"),
    ({"kd_loss_conf": {"topk": "0.5"}}, "kd_loss=dispatch: kd_loss_conf: topk='0.5': expected a number"),
], ids=["kd_weight-negative", "weights-zero", "topk-string"])
def test_6c_enh_kd_train_itself_refuses_the_same_configs(tmp_path, data_root, changes, message):
    assert message in refused_training(tmp_path, data_root, {**STUDENT, **changes})


# ------------------------------------------------------------ 7. a given teacher loaded at stage 4
def test_7_a_truncated_teacher_checkpoint_stops_stage_4_naming_the_file(tmp_path, capsys):
    from dispatch.bin import resolve_teacher

    teacher = make_teacher(tmp_path / "teacher")
    weights = teacher / "valid.loss.best.pth"
    assert resolve_teacher.main([str(teacher), "--check"]) == 0
    assert capsys.readouterr().out.split() == [str(teacher / "config.yaml"), str(weights)]
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert resolve_teacher.main([str(teacher)]) == 0  # found: without --check nothing is loaded
    capsys.readouterr()
    assert resolve_teacher.main([str(teacher), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"resolve_teacher: teacher_model={teacher}: the weights {weights} cannot be loaded" in err
    assert "truncated" in err and "Traceback" not in err


# --------------------------------------------------------------------- 8. audio at the door (stage 2)
def formatted(dump: Path, utt: str):
    """(noisy, clean) float samples of an utterance of a formatted dir, and their rate."""
    noisy, rate = sf.read(read_scp(dump / "wav.scp")[utt])
    return noisy, sf.read(read_scp(dump / "spk1.scp")[utt])[0], rate


def test_8a_multichannel_audio_is_refused_or_downmixed_when_asked(src, tmp_path, capsys, caplog):
    path = wav_path(src, "src_001", "noisy")
    mono = sf.read(path)[0]
    sf.write(path, np.stack([mono, 0.5 * mono], axis=1), FS, subtype="PCM_16")
    result = format_dir(src, tmp_path / "dump", capsys)
    assert result.code == 1
    assert f"wav.scp: utterance 'src_001': {path}: 2 channels; the recipes train single-channel models" in result.err
    assert "--downmix true" in result.err and not (tmp_path / "dump" / "wav.scp").exists()

    dump = tmp_path / "dump"
    assert format_dir(src, dump, capsys, "--downmix", "true").code == 0
    assert f"{src}: downmixed 1 file(s) to mono (the mean of their channels)" in caplog.text
    noisy, clean, rate = formatted(dump, "src_001")
    assert noisy.ndim == 1 and rate == FS and len(noisy) == len(clean)
    assert np.abs(noisy - 0.75 * mono).max() < 2 / 32768  # the mean of the channels
    assert validate_data_dir(dump, fs=FS) == 4


def test_8b_float_samples_above_full_scale_are_refused_or_rescaled_per_pair(src, tmp_path, capsys, caplog):
    noisy_path, clean_path = wav_path(src, "src_002", "noisy"), wav_path(src, "src_002", "clean")
    noisy, clean = sf.read(noisy_path)[0], sf.read(clean_path)[0]
    noisy, clean = noisy * 2.0 / np.abs(noisy).max(), clean * 1.5 / np.abs(clean).max()  # peaks 2.0 and 1.5
    sf.write(noisy_path, noisy, FS, subtype="FLOAT")
    sf.write(clean_path, clean, FS, subtype="FLOAT")
    dump = tmp_path / "dump"
    result = format_dir(src, dump, capsys)
    assert result.code == 1
    assert (f"{src}: 1 utterance(s) hold samples above full scale (|x| > 1), which 16-bit PCM cannot hold; "
            f"the loudest: wav.scp: utterance 'src_002': {noisy_path}: peak 2.000. They are not clipped") in result.err
    assert "--rescale true" in result.err and not (dump / "wav.scp").exists()

    assert format_dir(src, dump, capsys, "--rescale", "true").code == 0
    assert f"{src}: rescaled 1 utterance pair(s) above full scale (noisy and clean by the same factor)" in caplog.text
    out_noisy, out_clean, _ = formatted(dump, "src_002")
    factor = (32767 / 32768) / 2.0
    assert np.abs(out_noisy - factor * noisy).max() < 3 / 32768  # nothing clipped ...
    assert np.abs(out_clean - factor * clean).max() < 3 / 32768  # ... and the pair scaled alike
    untouched = read_scp(dump / "wav.scp")["src_000"]
    assert untouched == str(wav_path(src, "src_000", "noisy").resolve())  # a pair within full scale: as it is


def write_recordings(root: Path, rates=(FS,)) -> tuple:
    """Two recordings (noisy + clean, 2 s each) and their samples."""
    rng = np.random.default_rng(3)
    audio = {}
    for rec in ("rec_a", "rec_b"):
        clean = 0.3 * np.sin(2 * np.pi * 220 * np.arange(2 * FS) / FS) * rng.uniform(0.5, 1)
        noisy = clean + 0.05 * rng.standard_normal(2 * FS)
        for kind, sig in (("noisy", noisy), ("clean", clean)):
            sf.write(root / f"{rec}_{kind}.wav", sig, FS, subtype="PCM_16")
            audio[rec, kind] = sf.read(root / f"{rec}_{kind}.wav")[0]
    return audio


def segments_dir(tmp_path: Path, segments: str) -> Path:
    d = tmp_path / "seg"
    d.mkdir()
    write_recordings(d)
    (d / "wav.scp").write_text("".join(f"{r} {d / f'{r}_noisy.wav'}\n" for r in ("rec_a", "rec_b")))
    (d / "spk1.scp").write_text("".join(f"{r} {d / f'{r}_clean.wav'}\n" for r in ("rec_a", "rec_b")))
    (d / "segments").write_text(segments)
    utts = [line.split()[0] for line in segments.splitlines()]
    (d / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in utts))
    spk2utt = {}
    for u in utts:
        spk2utt.setdefault(u.split("-")[0], []).append(u)
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())))
    return d


def test_8c_kaldi_segments_cut_noisy_and_clean_alike(tmp_path, capsys):
    seg = segments_dir(tmp_path, "rec_a-0000 rec_a 0.00 0.75\nrec_a-0001 rec_a 1.00 2.00\nrec_b-0000 rec_b 0.50 -1\n")
    dump = tmp_path / "dump"
    assert format_dir(seg, dump, capsys).code == 0
    assert sorted(read_scp(dump / "wav.scp")) == ["rec_a-0000", "rec_a-0001", "rec_b-0000"]
    assert validate_data_dir(dump, fs=FS) == 3 and not (dump / "segments").exists()
    for utt, rec, start, stop in (("rec_a-0001", "rec_a", FS, 2 * FS), ("rec_b-0000", "rec_b", FS // 2, 2 * FS)):
        noisy, clean, _ = formatted(dump, utt)
        whole_noisy, whole_clean = (sf.read(seg / f"{rec}_{k}.wav")[0] for k in ("noisy", "clean"))
        assert np.array_equal(noisy, whole_noisy[start:stop]) and np.array_equal(clean, whole_clean[start:stop])
    assert read_scp(dump / "utt2num_samples")["rec_a-0000"] == str(int(0.75 * FS))


@pytest.mark.parametrize("segments, message", [
    ("rec_a-0000 rec_a 0.0 0.5\nrec_c-0000 rec_c 0.0 0.5\n",
     "segments: utterance 'rec_c-0000': recording 'rec_c' is not in wav.scp"),
    ("rec_a-0000 rec_a 0.0 0.5\nrec_b-0000 rec_b 1.5 3.0\n",
     "segments: utterance 'rec_b-0000': 1.5..3.0 s lies outside recording 'rec_b' (2.000 s)"),
    ("rec_a-0000 rec_a 0.5 0.5\n", "segments:1: utterance 'rec_a-0000': segment 0.5..0.5 s is empty or negative"),
    ("rec_a-0000 rec_a 0.0\n", "segments:1: expected '<utterance> <recording> <start s> <end s>'"),
], ids=["unknown-recording", "outside-recording", "empty", "malformed"])
def test_8c_a_broken_segments_file_is_named(tmp_path, capsys, segments, message):
    seg = segments_dir(tmp_path, segments)
    result = format_dir(seg, tmp_path / "dump", capsys)
    assert result.code == 1 and message in result.err, result.err
    assert "utt2spk" not in result.err


def test_8c_utt2spk_is_checked_against_the_segments(tmp_path, capsys):
    seg = segments_dir(tmp_path, "rec_a-0000 rec_a 0.0 0.5\nrec_b-0000 rec_b 0.0 0.5\n")
    (seg / "utt2spk").write_text("rec_a-0000 rec_a\n")
    (seg / "spk2utt").write_text("rec_a rec_a-0000\n")
    result = format_dir(seg, tmp_path / "dump", capsys)
    assert result.code == 1
    assert f"{seg}: utt2spk: utterance 'rec_b-0000' of segments is missing" in result.err


def test_8d_ark_entries_and_piped_commands_are_read(src, tmp_path, capsys):
    import kaldiio

    wav, spk1 = read_scp(src / "wav.scp"), read_scp(src / "spk1.scp")
    pcm = {k: (sf.read(v, dtype="int16")[0]) for k, v in wav.items()}
    kaldiio.save_ark(str(tmp_path / "noisy.ark"), {k: (FS, x) for k, x in pcm.items()}, scp=str(tmp_path / "noisy.scp"))
    ark = read_scp(tmp_path / "noisy.scp")
    ark["src_001"] = f"ark,s,cs:{ark['src_001']}"  # an rspecifier-style prefix is accepted too
    (src / "wav.scp").write_text("".join(f"{k} {ark[k]}\n" for k in sorted(ark)))
    spk1["src_002"] = f"cat {spk1['src_002']} |"
    (src / "spk1.scp").write_text("".join(f"{k} {spk1[k]}\n" for k in sorted(spk1)))
    dump = tmp_path / "dump"
    assert format_dir(src, dump, capsys).code == 0, capsys.readouterr().err
    assert validate_data_dir(dump, fs=FS) == 4
    noisy, clean, _ = formatted(dump, "src_002")
    assert np.array_equal(noisy, pcm["src_002"] / 32768.0)
    assert np.array_equal(clean, sf.read(wav_path(src, "src_002", "clean"))[0])


@pytest.mark.parametrize("entry, message", [
    ("{ark}:99999999", "kaldiio cannot read this archive entry"),
    ("{dir}/missing.ark:12", "no such archive"),
    ("false |", "command 'false |' failed (exit status 1)"),
    ("echo hello |", "command 'echo hello |': its output is not audio soundfile reads"),
], ids=["bad-offset", "missing-ark", "failing-pipe", "pipe-not-audio"])
def test_8d_an_unreadable_ark_entry_or_command_is_named(src, tmp_path, capsys, entry, message):
    import kaldiio

    x = sf.read(wav_path(src, "src_001", "noisy"), dtype="int16")[0]
    kaldiio.save_ark(str(tmp_path / "a.ark"), {"src_001": (FS, x)})
    entry = entry.format(ark=tmp_path / "a.ark", dir=tmp_path)
    wav = read_scp(src / "wav.scp")
    wav["src_001"] = entry
    (src / "wav.scp").write_text("".join(f"{k} {wav[k]}\n" for k in sorted(wav)))
    result = format_dir(src, tmp_path / "dump", capsys)
    assert result.code == 1
    assert "wav.scp: utterance 'src_001': " in result.err and message in result.err, result.err
    assert "Traceback" not in result.err and "no such file" not in result.err


def test_8e_non_utf8_bytes_in_a_list_are_named_with_file_and_line(src, tmp_path, capsys):
    lines = (src / "wav.scp").read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"src_002_noisy", b"src_002_\xe9noisy")  # a latin-1 e-acute
    (src / "wav.scp").write_bytes(b"".join(lines))
    result = format_dir(src, tmp_path / "dump", capsys)
    assert result.code == 1
    column = lines[2].index(b"\xe9") + 1
    assert f"format_data: {src / 'wav.scp'}:3: not UTF-8 text (byte 0xe9 at column {column})" in result.err
    assert "Traceback" not in result.err


def test_8f_a_dump_made_at_another_rate_is_redone_saying_so(src, tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    for kind in ("noisy", "clean"):  # float sources: every pair is converted into the dump
        for utt in ("src_000", "src_001", "src_002", "src_003"):
            path = wav_path(src, utt, kind)
            sf.write(path, sf.read(path)[0], FS, subtype="FLOAT")
    dump = tmp_path / "dump"
    assert format_dir(src, dump, capsys).code == 0
    assert format_data.main([str(src), str(dump), "--fs", "8000"]) == 0, capsys.readouterr().err
    assert f"{dump} was formatted at {FS} Hz; this run formats at 8000 Hz: converting anew" in caplog.text
    assert validate_data_dir(dump, fs=8000) == 4
    # Killed before its stamp: the copies themselves know their rate.
    (dump / format_data.STAMP).unlink()
    caplog.clear()
    assert format_dir(src, dump, capsys).code == 0
    assert f"{dump / 'data'}: the converted copies were made at 8000 Hz, this run formats at {FS} Hz" in caplog.text
    assert validate_data_dir(dump, fs=FS) == 4


def test_7_enh_kd_train_names_a_truncated_teacher_checkpoint(tmp_path, data_root):
    teacher = make_teacher(tmp_path / "teacher")
    weights = teacher / "valid.loss.best.pth"
    weights.write_bytes(weights.read_bytes()[:1000])
    message = refused_training(tmp_path, data_root, STUDENT, "--teacher_model", teacher)
    assert message.startswith(f"enh_kd_train: error: the weights {weights} cannot be loaded"), message


def test_7_enh_kd_sh_stops_at_stage_4_on_a_truncated_given_teacher(recipe, tmp_path):  # noqa: F811
    teacher = make_teacher(tmp_path / "teacher")
    weights = teacher / "valid.loss.best.pth"
    weights.write_bytes(weights.read_bytes()[:1000])
    proc = enh_kd(recipe, "--stage", "4", "--stop_stage", "4", "--teacher_model", str(teacher))
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"resolve_teacher: teacher_model={teacher}: the weights {weights} cannot be loaded" in log
    assert "Stage 4: using the given teacher" in log and "Traceback" not in log


def test_8a_enh_kd_sh_passes_format_args_to_stage_2(recipe):  # noqa: F811
    assert enh_kd(recipe, "--stage", "1", "--stop_stage", "1").returncode == 0
    entry = read_scp(recipe / "data" / "tr" / "wav.scp")["tr_001"]
    path = recipe / entry
    mono = sf.read(path)[0]
    sf.write(path, np.stack([mono, mono], axis=1), FS, subtype="PCM_16")
    refused = enh_kd(recipe, "--stage", "2", "--stop_stage", "2")
    assert refused.returncode != 0
    assert f"wav.scp: utterance 'tr_001': {entry}: 2 channels" in refused.stderr
    done = enh_kd(recipe, "--stage", "2", "--stop_stage", "2", "--format_args", "--downmix true")
    assert done.returncode == 0, done.stderr
    assert "downmixed 1 file(s) to mono" in done.stdout + done.stderr
    assert validate_data_dir(recipe / "dump" / "raw" / "tr", fs=FS) == 3


def test_8d_a_piped_recording_cut_by_segments_is_run_once_per_check_and_conversion(tmp_path, capsys):
    seg = segments_dir(tmp_path, "rec_a-0000 rec_a 0.0 0.5\nrec_a-0001 rec_a 0.5 1.0\nrec_a-0002 rec_a 1.0 -1\n"
                                 "rec_b-0000 rec_b 0.0 0.5\n")
    runs = tmp_path / "runs.txt"
    for name, kind in (("wav.scp", "noisy"), ("spk1.scp", "clean")):
        (seg / name).write_text("".join(f"{r} echo {r}_{kind} >> {runs}; cat {seg / f'{r}_{kind}.wav'} |\n"
                                        for r in ("rec_a", "rec_b")))
    dump = tmp_path / "dump"
    assert format_dir(seg, dump, capsys).code == 0
    assert validate_data_dir(dump, fs=FS) == 4
    noisy, clean, _ = formatted(dump, "rec_a-0001")
    assert np.array_equal(noisy, sf.read(seg / "rec_a_noisy.wav")[0][FS // 2: FS])
    assert np.array_equal(clean, sf.read(seg / "rec_a_clean.wav")[0][FS // 2: FS])
    counts = {line: runs.read_text().splitlines().count(line) for line in set(runs.read_text().splitlines())}
    assert counts == {f"{r}_{k}": 2 for r in ("rec_a", "rec_b") for k in ("noisy", "clean")}  # checked, converted
