"""dispatch.scoring metrics and the dispatch.bin.enh_score CLI, on short speech synthesized by flite."""
import importlib.util
import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import soundfile as sf
import soxr

from dispatch.bin import enh_score
from dispatch.scoring import (
    INTRUSIVE_DEFAULT,
    DNSMOSUnavailableError,
    Scorer,
    llr_frames,
    pesq_nb,
    pesq_nb_raw,
    segmental_snr,
    wss_frames,
)
from dispatch.scoring.dnsmos import find_models

FS = 16000
SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
)
SNRS_DB = (40, 30, 20, 10)  # decreasing quality; below 10 dB white noise, CSIG/COVL sit at their floor of 1
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="needs flite (apt-get install flite)")
needs_dnsmos = pytest.mark.skipif(
    importlib.util.find_spec("speechmos") is None or importlib.util.find_spec("onnxruntime") is None,
    reason="needs speechmos and onnxruntime",
)


def add_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(x))
    return x + noise * np.sqrt(np.mean(x**2) / np.mean(noise**2) * 10 ** (-snr_db / 10))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> List[np.ndarray]:
    """Three 16 kHz utterances of about 2.5 s from flite's slt voice."""
    if shutil.which("flite") is None:
        pytest.skip("needs flite (apt-get install flite)")
    folder = tmp_path_factory.mktemp("flite")
    out = []
    for i, text in enumerate(SENTENCES):
        path = folder / f"{i}.wav"
        subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True)
        x, fs = sf.read(path)
        out.append(x if fs == FS else soxr.resample(x, fs, FS))
    return out


@pytest.fixture(scope="module")
def dataset(speech, tmp_path_factory) -> Dict[str, Path]:
    """scp lists of clean, 'enhanced' (20 dB SNR) and noisy (5 dB) versions of the utterances."""
    folder = tmp_path_factory.mktemp("data")
    scps = {name: folder / f"{name}.scp" for name in ("ref", "inf", "noisy")}
    lines: Dict[str, List[str]] = {name: [] for name in scps}
    for i, x in enumerate(speech):
        utt = f"utt{2 - i}"  # scp order differs from sorted order
        for name, signal in (("ref", x), ("inf", add_noise(x, 20, i)), ("noisy", add_noise(x, 5, i))):
            sf.write(folder / f"{name}_{utt}.wav", signal, FS)
            lines[name].append(f"{utt} {folder / f'{name}_{utt}.wav'}\n")
    for name, path in scps.items():
        path.write_text("".join(lines[name]))
    return scps


def read_scores(path: Path) -> Dict[str, float]:
    return {utt: float(value) for utt, value in (line.split() for line in path.read_text().splitlines())}


def test_identical_signals_score_ideal(speech):
    scores = Scorer(["pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr", "sdr", "csig", "cbak", "covl"])(
        speech[0], speech[0], FS
    )
    assert scores["pesq_wb"] == pytest.approx(4.64, abs=0.01)
    assert scores["pesq_nb"] == pytest.approx(4.55, abs=0.01)
    assert scores["stoi"] == pytest.approx(1.0) and scores["estoi"] == pytest.approx(1.0)
    assert scores["si_sdr"] > 99 and scores["sdr"] > 99
    assert scores["csig"] == scores["cbak"] == scores["covl"] == 5.0


def test_metrics_fall_as_noise_grows(speech):
    scorer = Scorer(list(INTRUSIVE_DEFAULT) + ["pesq_nb"])
    per_snr = [scorer(speech[1], add_noise(speech[1], snr), FS) for snr in SNRS_DB]
    for name in scorer.names:
        values = [scores[name] for scores in per_snr]
        assert all(a > b for a, b in zip(values, values[1:])), f"{name} not decreasing over {SNRS_DB} dB: {values}"
    for scores in per_snr:
        assert all(1.0 <= scores[name] <= 5.0 for name in ("csig", "cbak", "covl")), scores
    assert [s["si_sdr"] for s in per_snr] == pytest.approx(SNRS_DB, abs=0.1)  # white noise: SI-SDR = SNR


def test_composite_ingredients_have_known_values(speech):
    x = speech[2]
    assert np.allclose(llr_frames(x, x, FS), 0) and np.allclose(wss_frames(x, x, FS), 0)
    assert np.allclose(llr_frames(x, 3 * x, FS), 0, atol=1e-9)  # LPC envelopes ignore gain
    assert segmental_snr(x, 0.9 * x, FS) == pytest.approx(20.0)  # error = 0.1 x in every frame
    assert segmental_snr(x, -9 * x, FS) == -10.0  # -20 dB, clipped at the floor
    # pesq_nb_raw inverts the P.862.1 mapping that pesq_nb applies
    noisy = add_noise(x, 20)
    raw = pesq_nb_raw(x, noisy, FS)
    assert 0.999 + 4 / (1 + math.exp(-1.4945 * raw + 4.6607)) == pytest.approx(pesq_nb(x, noisy, FS), abs=1e-5)


@needs_dnsmos
def test_dnsmos_rates_noise_lower(speech):
    scorer = Scorer(["dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"])
    assert not scorer.needs_ref
    clean = scorer(None, speech[0], FS)
    noisy = scorer(None, add_noise(speech[0], 0), FS)
    assert all(1 <= v <= 5 for v in [*clean.values(), *noisy.values()])
    assert noisy["dnsmos_bak"] < clean["dnsmos_bak"] and noisy["dnsmos_ovrl"] < clean["dnsmos_ovrl"]


def test_dnsmos_missing_models_say_where(tmp_path):
    with pytest.raises(DNSMOSUnavailableError, match="sig_bak_ovr.onnx"):
        find_models(str(tmp_path))


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="pesq_wb"):
        Scorer(["pesq"])


def run_cli(dataset, out: Path, *extra: str) -> None:
    enh_score.main(["--ref_scp", str(dataset["ref"]), "--inf_scp", str(dataset["inf"]),
                    "--output_dir", str(out), "--log_level", "WARNING", *extra])


@pytest.mark.filterwarnings("ignore:mir_eval.separation.bss_eval_sources:FutureWarning")
def test_cli_scores_agree_with_espnet2_and_rerun_does_nothing(dataset, tmp_path):
    out = tmp_path / "scoring"
    metrics = "pesq_wb,stoi,estoi,si_sdr,sdr,csig,cbak,covl"
    run_cli(dataset, out, "--noisy_scp", str(dataset["noisy"]), "--metrics", metrics, "--nj", "2")

    summary = json.loads((out / "summary.json").read_text())
    for name in metrics.upper().split(","):
        scores = read_scores(out / name)
        assert list(scores) == ["utt0", "utt1", "utt2"]  # sorted
        assert summary["enhanced"][name]["count"] == 3 and summary["enhanced"][name]["num_nan"] == 0
        assert summary["enhanced"][name]["mean"] == pytest.approx(np.mean(list(scores.values())))
        assert summary["enhanced"][name]["mean"] > summary["noisy"][name]["mean"], name
        assert (out / "noisy" / name).exists()
    assert "improvement" in (out / "result.txt").read_text()
    assert not (out / enh_score.PARTIAL).exists()

    # espnet2's own scorer on the same lists (STOI/ESTOI in percent there; SI_SNR is SI-SDR)
    from espnet2.bin.enh_scoring import scoring

    ref = tmp_path / "espnet"
    scoring(output_dir=str(ref), dtype="float64", log_level="WARNING", key_file=str(dataset["ref"]),
            ref_scp=[str(dataset["ref"])], inf_scp=[str(dataset["inf"])], ref_channel=0, flexible_numspk=False,
            is_tse=False, use_dnsmos=False, dnsmos_args={}, use_pesq=True)
    pairs = {"STOI": ("STOI_spk1", 100, 1e-9), "ESTOI": ("ESTOI_spk1", 100, 1e-9),
             "SI_SDR": ("SI_SNR_spk1", 1, 1e-4), "SDR": ("SDR_spk1", 1, 1e-3), "PESQ_WB": ("PESQ_WB_spk1", 1, 1e-6)}
    for ours, (theirs, scale, tol) in pairs.items():
        expected = {u: v / scale for u, v in read_scores(ref / theirs).items()}
        assert read_scores(out / ours) == pytest.approx(expected, abs=tol), ours

    stamp = (out / "summary.json").stat().st_mtime_ns
    run_cli(dataset, out, "--noisy_scp", str(dataset["noisy"]), "--metrics", metrics, "--nj", "2")
    assert (out / "summary.json").stat().st_mtime_ns == stamp


def test_cli_resumes_from_partial_cache(dataset, tmp_path):
    out = tmp_path / "scoring"
    run_cli(dataset, out, "--metrics", "si_sdr,stoi")
    config = json.loads((out / "summary.json").read_text())["config"]
    full = read_scores(out / "SI_SDR")
    for name in ("summary.json", "SI_SDR", "STOI"):
        (out / name).unlink()
    # As left by a run killed while writing its third line: one finished utterance, one torn line.
    record = {"system": "enhanced", "utt": "utt1", "scores": {"si_sdr": 123.0, "stoi": 0.5}}
    torn = '{"system": "enh'
    (out / enh_score.PARTIAL).write_text(f"{json.dumps({'config': config})}\n{json.dumps(record)}\n{torn}")

    run_cli(dataset, out, "--metrics", "si_sdr,stoi", "--nj", "2")
    resumed = read_scores(out / "SI_SDR")
    assert resumed["utt1"] == 123.0  # taken from the cache, not recomputed
    assert resumed["utt0"] == pytest.approx(full["utt0"]) and resumed["utt2"] == pytest.approx(full["utt2"])
    assert not (out / enh_score.PARTIAL).exists()


def test_cli_parts_then_merge(dataset, tmp_path):
    """Stage 8's split: --part J of --num_parts N, each into its own partial file, then --merge."""
    whole, out = tmp_path / "whole", tmp_path / "parts"
    args = ("--metrics", "si_sdr,stoi", "--noisy_scp", str(dataset["noisy"]))
    run_cli(dataset, whole, *args)
    assert enh_score.main(["--ref_scp", str(dataset["ref"]), "--inf_scp", str(dataset["inf"]),
                           "--output_dir", str(out), "--check", *args]) == 1
    run_cli(dataset, out, *args, "--num_parts", "4", "--part", "2")
    assert sorted(p.name for p in out.iterdir()) == ["partial_scores.2.jsonl"]  # nothing else yet
    assert len((out / "partial_scores.2.jsonl").read_text().splitlines()) == 1 + 2  # config + 2 of 6 jobs
    with pytest.raises(SystemExit, match="4 of 6 utterances are not scored yet"):
        run_cli(dataset, out, *args, "--merge")
    # the other shares, split another way: what part 2 scored is reused
    for part in (1, 2):
        run_cli(dataset, out, *args, "--num_parts", "2", "--part", str(part))
    run_cli(dataset, out, *args, "--merge")
    assert not list(out.glob("partial_scores*"))
    for name in ("SI_SDR", "STOI", "noisy/SI_SDR"):
        assert read_scores(out / name) == pytest.approx(read_scores(whole / name))
    assert json.loads((out / "summary.json").read_text()) == json.loads((whole / "summary.json").read_text())
    assert enh_score.main(["--ref_scp", str(dataset["ref"]), "--inf_scp", str(dataset["inf"]),
                           "--output_dir", str(out), "--check", *args]) == 0


def test_cli_reads_ark_and_pipe_entries_as_stage_2_does(dataset, tmp_path):
    """One reader of Kaldi lists: archive entries (kaldiio) and piped commands score as their files."""
    import kaldiio

    files = {utt: entry for utt, entry in (line.split(maxsplit=1) for line in dataset["inf"].read_text().splitlines())}
    ark = tmp_path / "inf.ark"
    kaldiio.save_ark(str(ark), {"utt1": (FS, sf.read(files["utt1"], dtype="int16")[0])},
                     scp=str(tmp_path / "ark.scp"))
    mixed = tmp_path / "mixed.scp"
    mixed.write_text(f"utt0 cat {files['utt0']} |\n{(tmp_path / 'ark.scp').read_text().strip()}\n"
                     f"utt2 {files['utt2']}\n")
    run_cli(dataset, tmp_path / "plain", "--metrics", "si_sdr")
    enh_score.main(["--ref_scp", str(dataset["ref"]), "--inf_scp", str(mixed), "--output_dir",
                    str(tmp_path / "mixed"), "--metrics", "si_sdr", "--log_level", "WARNING"])
    assert read_scores(tmp_path / "mixed" / "SI_SDR") == pytest.approx(read_scores(tmp_path / "plain" / "SI_SDR"))


@needs_dnsmos
def test_cli_no_ref_dnsmos(dataset, tmp_path):
    out = tmp_path / "scoring"
    enh_score.main(["--no_ref", "--inf_scp", str(dataset["inf"]), "--output_dir", str(out),
                    "--metrics", "dnsmos_ovrl,dnsmos_bak", "--log_level", "WARNING"])
    assert set(read_scores(out / "DNSMOS_OVRL")) == {"utt0", "utt1", "utt2"}


def _write_bad_case(case: str, dataset, folder: Path) -> Path:
    """An inf scp whose utt1 entry is broken in the way ``case`` names; returns its path."""
    lines = dataset["inf"].read_text().splitlines()
    bad = folder / "bad_utt1.wav"
    x, _ = sf.read(dict(line.split() for line in lines)["utt1"])
    if case == "length":
        sf.write(bad, x[: len(x) - FS // 10], FS)
    elif case == "rate":
        sf.write(bad, x, 8000)
    elif case == "unreadable":
        bad.write_bytes(b"not a wav file")
    elif case == "stereo":
        sf.write(bad, np.stack([x, x], axis=1), FS)
    lines = [f"utt1 {bad}" if line.startswith("utt1 ") else line for line in lines]
    if case == "missing":
        lines = [line for line in lines if not line.startswith("utt1 ")]
    scp = folder / "inf.scp"
    scp.write_text("\n".join(lines) + "\n")
    return scp


@pytest.mark.parametrize(
    "case, message",
    [
        ("length", r"utt1: .*bad_utt1.wav has \d+ samples but its reference .* has \d+"),
        ("rate", r"utt1: .*bad_utt1.wav is 8000 Hz but its reference .* is 16000 Hz"),
        ("unreadable", r"utt1: cannot read audio file .*bad_utt1.wav"),
        ("stereo", r"utt1: .*bad_utt1.wav has 2 channels, expected mono"),
        ("missing", r"utterance lists differ: 1 only in .*ref.scp \(e.g. utt1\)"),
    ],
)
def test_cli_names_the_bad_utterance(case, message, dataset, tmp_path):
    scp = _write_bad_case(case, dataset, tmp_path)
    with pytest.raises(SystemExit) as err:
        enh_score.main(["--ref_scp", str(dataset["ref"]), "--inf_scp", str(scp),
                        "--output_dir", str(tmp_path / "out"), "--metrics", "si_sdr"])
    assert err.value.code.startswith("enh_score: error: ")
    assert re.search(message, err.value.code), err.value.code


def test_cli_no_ref_rejects_intrusive_metrics(dataset, tmp_path):
    with pytest.raises(SystemExit, match=r"reference-free metrics only, not \['pesq_wb'\]"):
        enh_score.main(["--no_ref", "--inf_scp", str(dataset["inf"]), "--output_dir", str(tmp_path),
                        "--metrics", "pesq_wb"])
