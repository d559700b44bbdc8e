"""Block-by-block (streaming) inference of a causal Conv-TasNet, equal to its offline output.

Conv-TasNet in espnet2 is a conv encoder (kernel K, stride S), a TCN separator and a transposed-conv
decoder. With ``causal: true`` every dilated depthwise convolution only looks back ((P - 1) * d
frames, zero-padded at the start) and everything else acts frame by frame, provided the
normalisations do (``cLN`` or ``BN``; ``gLN`` averages over the whole utterance). The stream then
carries, between blocks:

- the input samples not yet framed (fewer than K),
- for each depthwise convolution, its last (P - 1) * d input frames (zeros at the start, which is
  exactly the offline zero padding),
- the decoder's overlap-add tail (K - S samples).

A frame is computed as soon as its K samples have arrived, so the algorithmic latency is the window,
K samples, with no lookahead. espnet2's own ``TCNSeparator.forward_streaming`` recomputes a
receptive field of zero-initialised *input* frames, which differs from the offline output over the
first receptive field; this module does not.
"""
from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from espnet2.enh.decoder.conv_decoder import ConvDecoder
from espnet2.enh.encoder.conv_encoder import ConvEncoder
from espnet2.enh.layers.tcn import Chomp1d, GlobalLayerNorm
from espnet2.enh.separator.dccrn_separator import DCCRNSeparator
from espnet2.enh.separator.tcn_separator import TCNSeparator

from dispatch.benchmark import num_threads
from dispatch.data.atomic import atomic_path
from dispatch.export.exporter import MIN_OPSET

MASK_NONLINEAR = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "linear": lambda x: x,
                  "softmax": lambda x: torch.softmax(x, dim=1)}


class NotStreamableError(ValueError):
    """A model this streaming path cannot run exactly; the message names the option and why."""


def streaming_error(model: torch.nn.Module) -> str:
    """Why ``model`` cannot be streamed exactly by :class:`StreamingConvTasNet`, or '' if it can."""
    if isinstance(model.separator, DCCRNSeparator):
        return (f"separator dccrn: each of its {len(model.separator.decoder)} decoder layers (ComplexConvTranspose2d, "
                "time kernel 2, first output frame dropped) looks one frame ahead: not causal, not streamed")
    if not isinstance(model.encoder, ConvEncoder) or not isinstance(model.decoder, ConvDecoder):
        return (f"encoder {type(model.encoder).__name__} / decoder {type(model.decoder).__name__}: the streaming "
                "path takes Conv-TasNet's conv encoder and decoder")
    if not isinstance(model.separator, TCNSeparator):
        return f"separator {type(model.separator).__name__}: the streaming path takes the tcn separator"
    if getattr(model, "normalize_variance", False):
        return "normalize_variance: true scales by the whole utterance's deviation (not causal)"
    tcn = model.separator.tcn
    if any(isinstance(m, GlobalLayerNorm) for m in tcn.modules()):
        return "separator_conf norm_type: gLN normalises over the whole utterance (not causal): use cLN"
    if not all(isinstance(layer.net[3].net[1], Chomp1d) for block in tcn.network[2] for layer in block):
        return "separator_conf causal: false (the dilated convolutions look ahead): use causal: true"
    return ""


@dataclass
class StreamState:
    """What a stream carries from one block to the next (see the module docstring)."""

    pending: torch.Tensor  # (batch, samples) not yet framed
    conv_buffers: List[torch.Tensor]  # per depthwise conv: (batch, channels, (P - 1) * d) past frames
    tail: torch.Tensor  # (batch, K - S) overlap-add tail of the decoder
    emitted: int = 0  # output samples returned so far
    received: int = 0  # input samples taken so far


class StreamingConvTasNet(torch.nn.Module):
    """Streaming inference of a causal espnet2 Conv-TasNet (single output); same weights, same modules.

    Shape:
        :meth:`step`: block (batch, n) -> (batch, m) output samples that are final, m a multiple of S;
        :meth:`flush`: the rest, up to the number of input samples.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        why = streaming_error(model)
        if why:
            raise NotStreamableError(why)
        self.enc, self.dec, self.sep = model.encoder.conv1d, model.decoder.convtrans1d, model.separator
        self.kernel, self.stride = model.encoder.kernel_size, model.encoder.stride
        self.tcn = self.sep.tcn
        self.layers = [layer for block in self.tcn.network[2] for layer in block]

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency: the encoder window (no lookahead)."""
        return self.kernel

    def initial_state(self, batch: int = 1) -> StreamState:
        buffers = []
        for layer in self.layers:
            conv = layer.net[3].net[0]
            buffers.append(torch.zeros(batch, conv.in_channels, (conv.kernel_size[0] - 1) * conv.dilation[0]))
        return StreamState(torch.zeros(batch, 0), buffers, torch.zeros(batch, self.kernel - self.stride))

    def _separate(self, frames: torch.Tensor, buffers: List[torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """TemporalConvNet.forward with buffered depthwise convolutions.

        Shape: frames (batch, N, n) -> masked frames, same shape, and the buffers after these frames.
        """
        output = self.tcn.network[1](self.tcn.network[0](frames))
        skip_sum, new_buffers = 0.0, []
        for buffer, layer in zip(buffers, self.layers):
            conv1x1, prelu, norm, ds = layer.net
            depthwise = ds.net[0]
            z = torch.cat([buffer, norm(prelu(conv1x1(output)))], dim=2)
            new_buffers.append(z[:, :, z.shape[2] - buffer.shape[2]:])
            z = F.conv1d(z, depthwise.weight, None, 1, 0, depthwise.dilation, depthwise.groups)
            shared = ds.net[3](ds.net[2](z))  # PReLU, norm (the Chomp1d is not needed: no right padding)
            output = output + ds.net[4](shared)
            if ds.skip_conv is not None:
                skip_sum = skip_sum + ds.skip_conv(shared)
        score = self.tcn.network[3:](skip_sum if self.tcn.skip_connection else output)
        mask = MASK_NONLINEAR[self.tcn.mask_nonlinear](score.view(score.shape[0], self.tcn.C, -1, score.shape[2]))
        return frames * mask[:, 0], new_buffers

    def forward(self, samples: torch.Tensor, tail: torch.Tensor, *buffers: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """One step on whole frames, without Python state (the graph of the ONNX stream, :func:`export_stream_onnx`).

        Shape:
            samples: (batch, (n - 1) * S + K), the samples of n frames; tail: (batch, K - S); buffers: as
            :meth:`initial_state`. Returns (n * S final output samples, the new tail, the new buffers).
        """
        masked, new_buffers = self._separate(F.relu(self.enc(samples.unsqueeze(1))), list(buffers))
        wav = self.dec(masked).squeeze(1)  # (batch, (n - 1) * S + K)
        k = tail.shape[1]
        wav = torch.cat([wav[:, :k] + tail, wav[:, k:]], dim=1)
        return (wav[:, :wav.shape[1] - k], wav[:, wav.shape[1] - k:], *new_buffers)

    @torch.no_grad()
    def step(self, block: torch.Tensor, state: StreamState, core: Optional[Callable[..., Sequence]] = None) -> torch.Tensor:
        """Take ``block`` (batch, any length) and return the output samples that became final.

        Args:
            core: what runs :meth:`forward` (default: this module; e.g. an onnxruntime session's wrapper).
        """
        state.received += block.shape[1]
        pending = torch.cat([state.pending, block], dim=1)
        n = (pending.shape[1] - self.kernel) // self.stride + 1 if pending.shape[1] >= self.kernel else 0
        state.pending = pending[:, n * self.stride:]
        if n == 0:
            return pending.new_zeros(pending.shape[0], 0)
        out, state.tail, *state.conv_buffers = (core or self)(
            pending[:, :(n - 1) * self.stride + self.kernel], state.tail, *state.conv_buffers)
        state.emitted += out.shape[1]
        return out

    def flush(self, state: StreamState) -> torch.Tensor:
        """The decoder's tail and zeros up to the input length (as the offline decoder pads)."""
        rest = max(state.received - state.emitted, 0)
        tail = F.pad(state.tail, (0, max(rest - state.tail.shape[1], 0)))[:, :rest]
        state.emitted += tail.shape[1]
        return tail

    def run(self, wav: torch.Tensor, block: int) -> torch.Tensor:
        """Stream ``wav`` (batch, samples) through in blocks of ``block`` samples: (batch, samples)."""
        return _stream(self, wav, block)[0]


def export_stream_onnx(stream: StreamingConvTasNet, path: Path, opset: int = MIN_OPSET) -> Path:
    """:meth:`StreamingConvTasNet.forward` as an ONNX graph, the state as inputs and outputs (TorchScript exporter).

    Inputs ``samples`` (batch, (n - 1) * S + K: any whole number of frames), ``tail``, ``conv_state_<i>``;
    outputs ``enhanced`` (batch, n * S), ``tail_out``, ``conv_state_<i>_out``; the initial state is zeros
    (:meth:`StreamingConvTasNet.initial_state`), the caller keeps the K - S samples framed again next time.
    """
    state = stream.initial_state(1)
    names = [f"conv_state_{i}" for i in range(len(state.conv_buffers))]
    example = torch.zeros(1, stream.kernel + 15 * stream.stride)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(stream, (example, state.tail, *state.conv_buffers), str(tmp), dynamo=False,
                          opset_version=opset, input_names=["samples", "tail", *names],
                          output_names=["enhanced", "tail_out", *[f"{n}_out" for n in names]],
                          dynamic_axes={"samples": {1: "samples"}, "enhanced": {1: "out_samples"}})
    return Path(path)


def onnx_core(session) -> Callable[..., List[torch.Tensor]]:
    """:meth:`StreamingConvTasNet.forward` run by an onnxruntime session of :func:`export_stream_onnx`'s graph."""
    names = [i.name for i in session.get_inputs()]

    def run(*tensors: torch.Tensor) -> List[torch.Tensor]:
        return [torch.from_numpy(x) for x in session.run(None, dict(zip(names, (t.numpy() for t in tensors))))]

    return run


def _stream(stream: StreamingConvTasNet, x: torch.Tensor, block: int, core=None) -> Tuple[torch.Tensor, List[float]]:
    """The streamed output of ``x`` (batch, samples) in blocks of ``block`` samples, and the time of each step."""
    state, pieces, times = stream.initial_state(x.shape[0]), [], []
    for i in range(0, x.shape[1], block):
        start = time.perf_counter()
        pieces.append(stream.step(x[:, i:i + block], state, core))
        times.append(time.perf_counter() - start)
    return torch.cat(pieces + [stream.flush(state)], dim=1), times


@dataclass
class StreamingReport:
    """Streaming vs offline on test audio, algorithmic latency and per-block speed on one thread."""

    block_samples: int
    block_ms: float
    latency_samples: int
    latency_ms: float  # window + lookahead (0 frames); the block adds up to block_ms of buffering
    max_abs_diff: float  # streaming vs offline (espnet2's forward), all utterances checked
    utterances: int
    rtf_per_block: float  # median time of one block step / block duration
    threads: int = 1
    onnx_max_abs_diff: Optional[float] = None  # the same with the ONNX stream graph run by onnxruntime
    onnx_rtf_per_block: Optional[float] = None


def streaming_report(model: torch.nn.Module, audio: Dict[str, "torch.Tensor"], fs: int, block_ms: float = 10.0,
                     threads: int = 1, onnx_path: Optional[Path] = None) -> StreamingReport:
    """Stream every utterance of ``audio`` ({utt: (samples,) array}) through :class:`StreamingConvTasNet` (and,
    with ``onnx_path``, through its ONNX stream graph written there) and compare with the offline output;
    each block step is timed on ``threads`` threads (the median step over the block's duration)."""
    from dispatch.export.check import ort_session
    from dispatch.teacher import teacher_enhance

    stream = StreamingConvTasNet(model)
    block = max(int(round(block_ms * fs / 1000)), 1)
    cores = {"torch": None}
    if onnx_path is not None:
        cores["onnx"] = onnx_core(ort_session(export_stream_onnx(stream, onnx_path), threads))
    worst, times = dict.fromkeys(cores, 0.0), {name: [] for name in cores}
    with num_threads(threads), torch.inference_mode():
        for wav in audio.values():
            x = torch.as_tensor(wav).unsqueeze(0)
            offline = teacher_enhance(model, x, torch.tensor([x.shape[1]]))
            for name, core in cores.items():
                streamed, step_times = _stream(stream, x, block, core)
                worst[name] = max(worst[name], float((streamed - offline).abs().max()))
                times[name] += step_times
    rtf = {name: statistics.median(t) / (block / fs) for name, t in times.items()}
    return StreamingReport(block, 1000 * block / fs, stream.latency_samples, 1000 * stream.latency_samples / fs,
                           worst["torch"], len(audio), rtf["torch"], threads, worst.get("onnx"), rtf.get("onnx"))
