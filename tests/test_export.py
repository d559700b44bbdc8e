"""ONNX export, parity, streaming and model cards of students (dispatch.export, dispatch.bin.export_onnx)."""
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import write_data_dir
from espnet2.layers.stft import Stft

from dispatch.benchmark import save_random_teacher
from dispatch.bin import export_onnx as export_cli
from dispatch.bin import pack_student
from dispatch.export.card import CardInputs, model_card
from dispatch.export.check import ort_session, parity
from dispatch.export.dft import ConvISTFT, ConvSTFT
from dispatch.export.exporter import ExportError, blocking_operator, export_onnx
from dispatch.export.model import ExportableEnhancer
from dispatch.export.report import HEADING, replace_section
from dispatch.export.report import main as report_main
from dispatch.export.streaming import (
    NotStreamableError,
    StreamingConvTasNet,
    StreamingDCCRN,
    export_stream_onnx,
    make_stream,
    onnx_core,
    streaming_error,
)
from dispatch.fingerprint import file_digest
from dispatch.teacher import build_teacher, teacher_enhance

ROOT = Path(__file__).resolve().parents[1]
MINI_STUDENT = ROOT / "egs2" / "mini_flite" / "enh_kd1" / "conf" / "train_student.yaml"
MINI_TEACHER = ROOT / "egs2" / "mini_flite" / "enh_kd1" / "conf" / "train_teacher.yaml"


def tiny_conv_tasnet(tmp_path: Path, causal: bool, norm_type: str) -> Path:
    conf = {"encoder": "conv", "encoder_conf": {"channel": 16, "kernel_size": 20, "stride": 10},
            "decoder": "conv", "decoder_conf": {"channel": 16, "kernel_size": 20, "stride": 10},
            "separator": "tcn", "separator_conf": {"num_spk": 1, "layer": 3, "stack": 2, "bottleneck_dim": 8,
                                                   "hidden_dim": 16, "kernel": 3, "causal": causal,
                                                   "norm_type": norm_type, "nonlinear": "relu"}}
    path = tmp_path / f"conv_tasnet_{norm_type}.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def tiny_dccrn(tmp_path: Path, **changes) -> Path:
    """A DCCRN-CL (complex LSTM) with 3 encoder/decoder layers on a 128-point STFT, window 100, hop 50;
    ``changes`` of its separator_conf."""
    stft = {"n_fft": 128, "win_length": 100, "hop_length": 50}
    separator_conf = {"num_spk": 1, "rnn_layer": 1, "rnn_units": 8, "masking_mode": "E", "use_clstm": True,
                      "kernel_size": 5, "kernel_num": [4, 8, 8], **changes}
    conf = {"encoder": "stft", "encoder_conf": stft, "decoder": "stft", "decoder_conf": stft,
            "separator": "dccrn", "separator_conf": separator_conf}
    path = tmp_path / ("dccrn" + "".join(f"_{k}_{v}" for k, v in sorted(changes.items())) + ".yaml")
    path.write_text(yaml.safe_dump(conf))
    return path


def trained_model(config: Path, exp_dir: Path) -> torch.nn.Module:
    """An experiment dir with random weights (as stage 5 leaves one) and its model, eval mode."""
    torch.manual_seed(0)
    save_random_teacher(config, exp_dir)
    return build_teacher(exp_dir / "config.yaml", exp_dir / "valid.loss.best.pth")[0]


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.1 * np.sin(2 * np.pi * 180 * t) + 0.03 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.mark.parametrize("n_fft,win,hop", [(256, 256, 64), (512, 400, 100)])
def test_dft_stft_and_istft_match_espnet2(n_fft, win, hop):
    stft = Stft(n_fft=n_fft, win_length=win, hop_length=hop)
    x = torch.randn(2, 4003, dtype=torch.float32)
    spec, _ = stft(x)  # (batch, frames, freq, 2)
    real, imag = ConvSTFT(n_fft, hop, win)(x)
    assert real.shape == spec[..., 0].shape
    assert torch.allclose(real, spec[..., 0], atol=2e-5) and torch.allclose(imag, spec[..., 1], atol=2e-5)
    y = torch.randn_like(spec)  # any spectrum, not only a consistent one
    ref, _ = stft.inverse(torch.complex(y[..., 0], y[..., 1]), torch.tensor([4003, 4003]))
    out = ConvISTFT(n_fft, hop, win)(y[..., 0], y[..., 1], 4003)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5)


def test_mini_student_exports_with_parity_and_dynamic_length(tmp_path):
    model = trained_model(MINI_STUDENT, tmp_path / "exp")
    wrapper = ExportableEnhancer(model).eval()
    result = export_onnx(wrapper, tmp_path / "m.onnx", exporters=["torchscript"])
    assert result.exporter == "torchscript" and result.opset >= 17
    session = ort_session(result.path)
    audio = {"a": speech_like(0.7), "b": speech_like(1.9, seed=1)}  # two lengths: the time axis is dynamic
    p = parity(model, session, audio)
    assert p.utterances == 2 and p.si_sdr_min_db >= 60 and p.max_abs_diff < 1e-4


def test_dynamo_exporter_on_a_conv_tasnet(tmp_path):
    model = trained_model(tiny_conv_tasnet(tmp_path, False, "gLN"), tmp_path / "exp")
    result = export_onnx(ExportableEnhancer(model).eval(), tmp_path / "m.onnx", exporters=["dynamo"])
    assert result.exporter == "dynamo"
    assert parity(model, ort_session(result.path), {"a": speech_like(0.5), "b": speech_like(1.3)}).si_sdr_min_db >= 60


def test_dccrn_exports_without_nan_at_the_masked_dc_bin(tmp_path):
    """The TorchScript exporter's atan2 is NaN at (0, 0), DCCRN's mask phase at the padded DC bin."""
    model = trained_model(tiny_dccrn(tmp_path), tmp_path / "exp")
    result = export_onnx(ExportableEnhancer(model).eval(), tmp_path / "m.onnx", exporters=["torchscript"])
    p = parity(model, ort_session(result.path), {"a": speech_like(0.6), "b": speech_like(1.1, seed=2)})
    assert np.isfinite(p.max_abs_diff) and p.si_sdr_min_db >= 60


class EigenModel(torch.nn.Module):
    """An operator ONNX has no translation for."""

    def forward(self, mix):
        frames = mix[:, :1024].reshape(mix.shape[0], 32, 32)
        return torch.linalg.eigvalsh(frames @ frames.transpose(1, 2)).repeat(1, 32)


def test_an_unexportable_model_names_the_blocking_operator(tmp_path):
    with pytest.raises(ExportError) as e:
        export_onnx(EigenModel(), tmp_path / "m.onnx", exporters=["torchscript"])
    assert e.value.operator == "aten::linalg_eigvalsh"
    assert "aten::linalg_eigvalsh" in str(e.value)
    assert not (tmp_path / "m.onnx").exists()  # nothing half-written


def test_blocking_operator_of_each_exporter_message():
    assert blocking_operator(RuntimeError("Exporting the operator 'aten::foo' to ONNX opset version 17 is "
                                          "not supported.")) == "aten::foo"
    assert blocking_operator(RuntimeError("x\nUnsupported FX nodes: {'call_function': ['aten.bar.default']}")) \
        == "aten.bar.default"
    assert blocking_operator(ValueError("something else")) == "ValueError: something else"


def test_streaming_equals_offline_on_a_causal_conv_tasnet(tmp_path):
    model = trained_model(tiny_conv_tasnet(tmp_path, True, "cLN"), tmp_path / "exp")
    assert streaming_error(model) == ""
    stream = StreamingConvTasNet(model)
    x = torch.from_numpy(speech_like(0.4)).unsqueeze(0)
    offline = teacher_enhance(model, x, torch.tensor([x.shape[1]]))
    for block in (7, 37, 160):  # below, across and above the encoder's stride (10) and window (20)
        streamed = stream.run(x, block)
        assert streamed.shape == offline.shape
        assert (streamed - offline).abs().max() < 1e-5, block
    assert stream.latency_samples == 20
    core = onnx_core(ort_session(export_stream_onnx(stream, tmp_path / "stream.onnx")))
    state = stream.initial_state(1)
    pieces = [stream.step(x[:, i:i + 37], state, core) for i in range(0, x.shape[1], 37)]
    assert (torch.cat(pieces + [stream.flush(state)], dim=1) - offline).abs().max() < 1e-5


@pytest.mark.parametrize("separator_conf", [{}, {"use_clstm": False, "rnn_layer": 2, "masking_mode": "C"}],
                         ids=["dccrn_cl", "dccrn_lstm"])
def test_streaming_equals_offline_on_a_dccrn(tmp_path, separator_conf):
    model = trained_model(tiny_dccrn(tmp_path, **separator_conf), tmp_path / "exp")
    assert streaming_error(model) == ""
    stream = make_stream(model)
    assert isinstance(stream, StreamingDCCRN)
    for samples in (6437, 6400):  # the last frame's window past the end, and a length of whole hops
        x = 3 * torch.from_numpy(speech_like(0.5))[:samples].unsqueeze(0)
        offline = teacher_enhance(model, x, torch.tensor([x.shape[1]]))
        for block in (1, 50, 37, 160):  # a sample, one hop, blocks not dividing the hop or the length
            streamed = stream.run(x, block)
            assert streamed.shape == offline.shape
            # float32 round-off (the output's peak is about 0.02): differences of some 1e-8 were measured
            assert (streamed - offline).abs().max() < 1e-6, (samples, block)


def test_dccrn_stream_graph_in_onnxruntime_equals_offline(tmp_path):
    model = trained_model(tiny_dccrn(tmp_path), tmp_path / "exp")
    stream = make_stream(model)
    core = onnx_core(ort_session(export_stream_onnx(stream, tmp_path / "stream.onnx")))
    x = 3 * torch.from_numpy(speech_like(0.4, seed=4)).unsqueeze(0)
    offline = teacher_enhance(model, x, torch.tensor([x.shape[1]]))
    for block in (1, 37, 160):  # empty decoder buffers on the first call, one-frame calls, several frames
        state = stream.initial_state(1)
        pieces = [stream.step(x[:, i:i + block], state, core) for i in range(0, x.shape[1], block)]
        assert (torch.cat(pieces + [stream.flush(state, core)], dim=1) - offline).abs().max() < 1e-6, block


def emission_latency(stream, x: torch.Tensor) -> int:
    """Fed one sample at a time, the most input samples received, counted from an output sample on, by the
    time that output sample is returned: the measured algorithmic latency."""
    state, worst, emitted = stream.initial_state(1), 0, 0
    for i in range(x.shape[1]):
        out = stream.step(x[:, i:i + 1], state)
        if out.shape[1]:
            worst, emitted = max(worst, i + 1 - emitted), emitted + out.shape[1]
    return worst


def test_stream_latency_is_window_plus_the_measured_lookahead(tmp_path):
    dccrn = trained_model(tiny_dccrn(tmp_path), tmp_path / "dccrn")
    stream = make_stream(dccrn)
    assert stream.lookahead == separator_lookahead(dccrn) == 3
    assert stream.latency_samples == 100 + 3 * 50  # window + lookahead frames * hop
    x = torch.from_numpy(speech_like(0.1)).unsqueeze(0)
    assert emission_latency(stream, x) == stream.latency_samples
    conv_tasnet = make_stream(trained_model(tiny_conv_tasnet(tmp_path, True, "cLN"), tmp_path / "tasnet"))
    assert emission_latency(conv_tasnet, x) == conv_tasnet.latency_samples == 20


def test_non_causal_models_are_refused_by_the_streaming_path(tmp_path):
    model = trained_model(tiny_conv_tasnet(tmp_path, True, "gLN"), tmp_path / "exp")
    assert "gLN" in streaming_error(model)
    with pytest.raises(NotStreamableError, match="gLN"):
        StreamingConvTasNet(model)
    stft_model = trained_model(MINI_STUDENT, tmp_path / "mini")
    assert "STFTEncoder" in streaming_error(stft_model) and "gLN" in streaming_error(stft_model)
    assert "bidirectional LSTM" in streaming_error(trained_model(MINI_TEACHER, tmp_path / "blstm"))
    bidirectional = trained_model(tiny_dccrn(tmp_path, bidirectional=True), tmp_path / "dccrn")
    with pytest.raises(NotStreamableError, match="DCCRNSeparator: its bidirectional LSTM"):
        make_stream(bidirectional)


def test_replace_section_keeps_the_other_sections():
    text = "# Results\n\n## test\n\nx\n\n## Deployment\n\nold\n\n## Ablation\n\ny\n"
    out = replace_section(text, [HEADING, "", "new", ""])
    assert "old" not in out and "new" in out and out.index("new") < out.index("## Ablation") and "y" in out
    assert replace_section("# Results\n", [HEADING, "", "t", ""]).endswith("## Deployment\n\nt\n\n")


def test_cli_exports_checks_streams_and_writes_the_table(tmp_path):
    exp = tmp_path / "student"
    trained_model(tiny_conv_tasnet(tmp_path, True, "cLN"), exp)
    data = write_data_dir(tmp_path, "test", 2, seed=3, seconds=(0.5, 0.8))
    code = export_cli.main(["--data_dir", str(data), "--rtf_utts", "1", "--repeats", "1",
                            "--name", "kd", "--model", str(exp), "--output_dir", str(exp), "--require", "true"])
    assert code == 0
    record = json.loads((exp / "onnx" / "export.json").read_text())
    assert record["onnx"]["opset"] >= 17 and (exp / "onnx" / "model.onnx").is_file()
    assert record["parity"]["utterances"] == 2 and record["parity"]["si_sdr_min_db"] >= 60
    assert record["speed"]["threads"] == 1 and record["speed"]["rtf_onnx"] > 0 and record["speed"]["rtf_torch"] > 0
    assert record["streaming"]["max_abs_diff"] < 1e-5 and record["streaming"]["latency_ms"] == pytest.approx(1.25)
    assert record["streaming"]["onnx_max_abs_diff"] < 1e-5 and (exp / "onnx" / "model.stream.onnx").is_file()
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n## test\n\nrows\n")
    assert report_main([str(results), f"kd={exp}"]) == 0
    table = results.read_text()
    assert "## Deployment" in table and "| kd | torchscript, opset 17 |" in table and "rows" in table
    assert "over 2 utt.)" in table  # the streaming check's utterance count is in the streaming cell


def test_cli_refuses_a_negative_utterance_count(capsys):
    with pytest.raises(SystemExit):
        export_cli.main(["--name", "kd", "--model", "m", "--output_dir", "o", "--stream_utts", "-1"])
    assert "--stream_utts -1: expected a count >= 0" in capsys.readouterr().err


def test_cli_streams_a_dccrn_cl(tmp_path):
    exp = tmp_path / "student"
    trained_model(tiny_dccrn(tmp_path), exp)
    data = write_data_dir(tmp_path, "test", 2, seed=5, seconds=(0.5, 0.8))
    assert export_cli.main(["--data_dir", str(data), "--rtf_utts", "1", "--repeats", "1", "--name", "dccrn",
                            "--model", str(exp), "--output_dir", str(exp), "--stream_utts", "1"]) == 0
    record = json.loads((exp / "onnx" / "export.json").read_text())
    stream = record["streaming"]
    assert record["parity"]["utterances"] == 2 and stream["utterances"] == 1  # streamed: the first one only
    assert stream["max_abs_diff"] < 1e-6 and stream["onnx_max_abs_diff"] < 1e-6 and stream["rtf_per_block"] > 0
    assert stream["latency_ms"] == pytest.approx(1000 * 250 / 16000)  # 100-sample window, 3 frames of 50
    assert stream["window_ms"] == pytest.approx(6.25) and stream["lookahead_ms"] == pytest.approx(9.375)


def fake_scores(out_dir: Path, dset: str, pesq: float) -> None:
    d = out_dir / f"enhanced_{dset}" / "scoring"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"enhanced": {"PESQ_WB": {"mean": pesq, "std": 0.1, "count": 2}}}))


def test_packed_zip_carries_a_model_card(tmp_path):
    exp = tmp_path / "student_kd"
    trained_model(tiny_conv_tasnet(tmp_path, True, "cLN"), exp)
    config = yaml.safe_load((exp / "config.yaml").read_text())
    config.update(kd_loss="dispatch", kd_loss_conf={"topk": 0.8}, kd_weight=1.0,
                  train_data_path_and_name_and_type=[["dump/raw/train/wav.scp", "speech_mix", "sound"]])
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    (exp / ".teacher.json").write_text(json.dumps(
        {"version": 1, "inputs": {"teacher": {"kind": "file", "path": "exp/t/w.pth", "sha256": "ab" * 32}}}))
    (exp / "log").mkdir()
    (exp / "log" / "train.log").write_text("# python3 -m dispatch.bin.enh_kd_train --config x.yaml\n# Started\n")
    for name, pesq in (("teacher", 2.9), ("baseline", 2.1), ("student_kd", 2.4)):
        fake_scores(exp if name == "student_kd" else tmp_path / name, "test", pesq)
    zip_path = tmp_path / "packed.zip"
    assert pack_student.main(["--exp_dir", str(exp), "--outpath", str(zip_path), "--name", "kd",
                              "--compare", f"kd={exp}", "--compare", f"teacher={tmp_path / 'teacher'}",
                              "--compare", f"baseline={tmp_path / 'baseline'}", "--test_sets", "test",
                              "--command", "./run.sh --stage 5"]) == 0
    with zipfile.ZipFile(zip_path) as z:
        card = z.read("README.md").decode()
    for field in ("## Architecture", "separator: tcn", "parameters:", "MACs per second of audio",
                  "PyTorch real-time factor, one CPU thread", "| teacher | 2.900 |", "| baseline | 2.100 |",
                  "| kd | 2.400 |", "kd_loss: dispatch", "sha256 abababab", "dump/raw/train/wav.scp",
                  "./run.sh --stage 5", "python3 -m dispatch.bin.enh_kd_train --config x.yaml"):
        assert field in card, field


def test_card_includes_the_export_record(tmp_path):
    exp = tmp_path / "student"
    trained_model(MINI_STUDENT, exp)
    (exp / "onnx").mkdir()
    (exp / "onnx" / "export.json").write_text(json.dumps({
        "date": "d", "onnx": {"exporter": "torchscript", "opset": 17}, "parity": {"si_sdr_min_db": 120.0,
                                                                               "max_abs_diff": 1e-7},
        "speed": {"rtf_torch": 0.01, "rtf_onnx": 0.004}, "streaming": {"why_not": "STFT"}}))
    weights = exp / "valid.loss.best.pth"
    assert "describes other weights" in model_card(CardInputs("baseline", exp, weights), rtf=0.01)  # no stamp
    (exp / "onnx" / ".inputs.json").write_text(json.dumps(
        {"version": 1, "inputs": {"model": {"kind": "file", "path": str(weights), "sha256": file_digest(weights)}}}))
    card = model_card(CardInputs("baseline", exp, weights), rtf=0.01)
    assert "| baseline | torchscript, opset 17 | 120.0 | 1.0e-07 | 0.0100 | 0.0040 | - |" in card
    assert "Trained without KD." in card


def test_upload_carries_the_packed_card_and_the_onnx_export(tmp_path, monkeypatch):
    import huggingface_hub

    from dispatch.bin import upload_hf

    zip_path = tmp_path / "packed.zip"
    with zipfile.ZipFile(zip_path, "w") as z:
        z.writestr("README.md", "# kd: card\n\n## Architecture\n")
        z.writestr("exp/config.yaml", "encoder: conv\n")
    (tmp_path / "out" / "onnx").mkdir(parents=True)
    (tmp_path / "out" / "onnx" / "model.onnx").write_text("model.onnx")
    record = {"name": "kd", "date": "d", "onnx": {"exporter": "torchscript", "opset": 17},
              "parity": {"si_sdr_min_db": 120.0, "max_abs_diff": 1e-7}, "speed": {"rtf_torch": 0.01, "rtf_onnx": 0.004}}
    (tmp_path / "out" / "onnx" / "export.json").write_text(json.dumps(record))
    uploaded = {}

    class FakeApi:
        def create_repo(self, repo, **kwargs):
            uploaded["repo"] = repo

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploaded["files"] = {str(p.relative_to(folder_path)): p.read_text() for p in Path(folder_path).rglob("*")
                                 if p.is_file()}

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert upload_hf.main(["--zip", str(zip_path), "--repo", "u/kd", "--export_dir", str(tmp_path / "out")]) == 0
    files = uploaded["files"]
    assert files["README.md"].startswith("---\ntags:") and "# kd: card" in files["README.md"]
    assert files["onnx/model.onnx"] == "model.onnx" and json.loads(files["onnx/export.json"]) == record
    assert "| kd | torchscript, opset 17 | 120.0 |" in files["README.md"]  # the card was packed before stage 12


def separator_lookahead(model: torch.nn.Module, frame: int = 200) -> int:
    """Frames by which the offline separator looks ahead: a change of its input from ``frame`` on changes
    its output from ``frame - lookahead`` on."""
    x = torch.from_numpy(speech_like(1.0)).unsqueeze(0)
    feats, flens = model.encoder(x, torch.tensor([x.shape[1]]))
    changed = feats.clone()
    changed[:, frame:] += 0.1
    out = [model.separator(f, flens, {})[0][0] for f in (feats, changed)]
    return frame - int((out[0] - out[1]).abs().amax(dim=-1)[0].gt(1e-7).nonzero()[0])


def test_espnet2_dccrn_looks_ahead_one_frame_per_decoder_layer(tmp_path):
    """What the DCCRN stream delays by: each decoder layer (time kernel 2, first frame dropped) reads one frame ahead."""
    model = trained_model(tiny_dccrn(tmp_path), tmp_path / "exp")
    assert separator_lookahead(model) == len(model.separator.decoder) == 3
