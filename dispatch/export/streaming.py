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

import time
from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn.functional as F
from espnet2.enh.decoder.conv_decoder import ConvDecoder
from espnet2.enh.encoder.conv_encoder import ConvEncoder
from espnet2.enh.layers.tcn import Chomp1d, GlobalLayerNorm
from espnet2.enh.separator.dccrn_separator import DCCRNSeparator
from espnet2.enh.separator.tcn_separator import TCNSeparator

from dispatch.benchmark import num_threads

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

    def _separate(self, frames: torch.Tensor, state: StreamState) -> torch.Tensor:
        """TemporalConvNet.forward with buffered depthwise convolutions: (batch, N, frames) -> masked, same shape."""
        output = self.tcn.network[1](self.tcn.network[0](frames))
        skip_sum = 0.0
        for i, layer in enumerate(self.layers):
            conv1x1, prelu, norm, ds = layer.net
            y = norm(prelu(conv1x1(output)))
            depthwise = ds.net[0]
            z = torch.cat([state.conv_buffers[i], y], dim=2)
            if state.conv_buffers[i].shape[2]:
                state.conv_buffers[i] = z[:, :, -state.conv_buffers[i].shape[2]:]
            z = F.conv1d(z, depthwise.weight, None, 1, 0, depthwise.dilation, depthwise.groups)
            shared = ds.net[3](ds.net[2](z))  # PReLU, norm (the Chomp1d is not needed: no right padding)
            output = output + ds.net[4](shared)
            if ds.skip_conv is not None:
                skip_sum = skip_sum + ds.skip_conv(shared)
        score = self.tcn.network[3:](skip_sum if self.tcn.skip_connection else output)
        mask = MASK_NONLINEAR[self.tcn.mask_nonlinear](score.view(score.shape[0], self.tcn.C, -1, score.shape[2]))
        return frames * mask[:, 0]

    @torch.no_grad()
    def step(self, block: torch.Tensor, state: StreamState) -> torch.Tensor:
        state.received += block.shape[1]
        pending = torch.cat([state.pending, block], dim=1)
        n = (pending.shape[1] - self.kernel) // self.stride + 1 if pending.shape[1] >= self.kernel else 0
        state.pending = pending[:, n * self.stride:]
        if n == 0:
            return pending.new_zeros(pending.shape[0], 0)
        frames = F.relu(self.enc(pending[:, None, :(n - 1) * self.stride + self.kernel]))
        wav = self.dec(self._separate(frames, state)).squeeze(1)  # (batch, (n - 1) * S + K)
        wav[:, :state.tail.shape[1]] += state.tail
        out, state.tail = wav[:, :n * self.stride], wav[:, n * self.stride:]
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
        state = self.initial_state(wav.shape[0])
        pieces = [self.step(wav[:, i:i + block], state) for i in range(0, wav.shape[1], block)]
        return torch.cat(pieces + [self.flush(state)], dim=1)


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


def streaming_report(model: torch.nn.Module, audio: Dict[str, "torch.Tensor"], fs: int, block_ms: float = 10.0,
                     threads: int = 1) -> StreamingReport:
    """Run :class:`StreamingConvTasNet` on every utterance of ``audio`` ({utt: (samples,) array}) and compare
    with the offline output; time each block step on ``threads`` threads."""
    from dispatch.teacher import teacher_enhance

    stream = StreamingConvTasNet(model)
    block = max(int(round(block_ms * fs / 1000)), 1)
    worst, times = 0.0, []
    with num_threads(threads), torch.inference_mode():
        for wav in audio.values():
            x = torch.as_tensor(wav).unsqueeze(0)
            offline = teacher_enhance(model, x, torch.tensor([x.shape[1]]))
            state, pieces = stream.initial_state(1), []
            for i in range(0, x.shape[1], block):
                start = time.perf_counter()
                pieces.append(stream.step(x[:, i:i + block], state))
                times.append(time.perf_counter() - start)
            streamed = torch.cat(pieces + [stream.flush(state)], dim=1)
            worst = max(worst, float((streamed - offline).abs().max()))
    times.sort()
    return StreamingReport(block, 1000 * block / fs, stream.latency_samples, 1000 * stream.latency_samples / fs,
                           worst, len(audio), times[len(times) // 2] / (block / fs), threads)

