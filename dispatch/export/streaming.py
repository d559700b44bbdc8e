"""Block-by-block (streaming) inference of causal students, equal to their offline output.

One driver (:class:`BlockStream`) runs both streamed models: the input is cut into frames of ``window``
samples every ``hop``; one call of the step (``forward``, also the ONNX stream graph of
:func:`export_stream_onnx`) takes the samples of whole frames and the state, and returns the output samples
that became final and the new state; the driver keeps the samples not yet framed between calls.

**Conv-TasNet** (:class:`StreamingConvTasNet`): a conv encoder (kernel K, stride S), a TCN separator and a
transposed-conv decoder. With ``causal: true`` every dilated depthwise convolution only looks back
((P - 1) * d frames, zero-padded at the start) and everything else acts frame by frame, provided the
normalisations do (``cLN`` or ``BN``; ``gLN`` averages over the whole utterance). The state: for each
depthwise convolution its last (P - 1) * d input frames (zeros at the start, exactly the offline zero
padding), and the decoder's overlap-add tail (K - S samples). A frame is computed as soon as its K samples
have arrived: the algorithmic latency is the window, K samples, with no lookahead. espnet2's own
``TCNSeparator.forward_streaming`` recomputes a receptive field of zero-initialised *input* frames, which
differs from the offline output over the first receptive field; this module does not.

**DCCRN** (:class:`StreamingDCCRN`; DCCRN-CL with ``use_clstm: true``) on espnet2's STFT (``center: true``,
reflect padding, window of ``win_length`` centred in ``n_fft``). Its encoder convolutions are causal
(``ComplexConv2d`` pads one past frame) and its LSTMs unidirectional, but each of its L decoder layers
(``ComplexConvTranspose2d``, time kernel 2, first output frame dropped) computes frame t from its input
frames t and t + 1, so the mask of frame t needs the STFT up to frame t + L: L frames of lookahead. The
state:

- per encoder layer, its last input frame (zeros at the start: the offline causal padding);
- the LSTM hidden and cell states (DCCRN-CL: each layer's real and imaginary LSTM, each run on the real
  and the imaginary part);
- per decoder layer i, its last input frame (frame t + 1 arrives one call later) and the i frames of its
  encoder skip connection that wait for the deeper layers' output;
- the L mixture spectrum frames that wait for their masks;
- the iSTFT overlap-add tails of the windowed frames and of the squared window (their ratio is the output).

Frame t is computed once its window has arrived (the window of frame t ends win_length / 2 after t * hop;
the samples before the signal are its reflection, as ``torch.stft`` pads); the first call waits for L + 1
frames, so that every decoder layer has two frames to read. The last call (:meth:`StreamingDCCRN.flush`)
adds the reflect padding of the end and gives each decoder layer the zero frame its offline input ends
with. Algorithmic latency: the window plus L hops (DCCRN-CL small at 16 kHz: 400 + 6 * 100 samples =
62.5 ms).
"""
from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from espnet2.enh.decoder.conv_decoder import ConvDecoder
from espnet2.enh.decoder.stft_decoder import STFTDecoder
from espnet2.enh.encoder.conv_encoder import ConvEncoder
from espnet2.enh.encoder.stft_encoder import STFTEncoder
from espnet2.enh.layers.complexnn import complex_cat
from espnet2.enh.layers.tcn import Chomp1d, GlobalLayerNorm
from espnet2.enh.separator.dccrn_separator import DCCRNSeparator
from espnet2.enh.separator.tcn_separator import TCNSeparator

from dispatch.benchmark import num_threads
from dispatch.data.atomic import atomic_path
from dispatch.export.dft import ConvISTFT, ConvSTFT
from dispatch.export.exporter import MIN_OPSET, torchscript_symbolics
from dispatch.export.model import NotExportableError, real_complex_outputs, stft_options

MASK_NONLINEAR = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "linear": lambda x: x,
                  "softmax": lambda x: torch.softmax(x, dim=1)}


class NotStreamableError(ValueError):
    """A model this streaming path cannot run exactly; the message names the option and why."""


def _conv_tasnet_errors(model: torch.nn.Module) -> List[str]:
    tcn, errors = model.separator.tcn, []
    if any(isinstance(m, GlobalLayerNorm) for m in tcn.modules()):
        errors.append("separator_conf norm_type: gLN normalises over the whole utterance (not causal): use cLN")
    if not all(isinstance(layer.net[3].net[1], Chomp1d) for block in tcn.network[2] for layer in block):
        errors.append("separator_conf causal: false (the dilated convolutions look ahead): use causal: true")
    return errors


def _dccrn_errors(model: torch.nn.Module) -> List[str]:
    errors, options = [], []
    for what, module, kind in (("encoder", model.encoder, STFTEncoder), ("decoder", model.decoder, STFTDecoder)):
        if not isinstance(module, kind):
            errors.append(f"{what} {type(module).__name__}: DCCRN is streamed on espnet2's {kind.__name__}")
            continue
        try:
            options.append(stft_options(module, what))
        except NotExportableError as e:
            errors.append(str(e))
    if len(options) == 2 and options[0] != options[1]:
        errors.append(f"encoder_conf {options[0]} and decoder_conf {options[1]} differ: the stream takes one STFT")
    sep = model.separator
    # The buffers below follow espnet2 202511's layout: causal time kernel 2 in, time kernel 2 out.
    if not all(layer[0].causal and layer[0].padding[1] == 1 and layer[0].kernel_size[1] == 2 for layer in sep.encoder) \
            or not all(layer[0].kernel_size[1] == 2 and layer[0].padding[1] == 0 for layer in sep.decoder):
        errors.append("separator dccrn: its convolutions are not espnet2 202511's (time kernel 2, causal encoder)")
    return errors


def streaming_error(model: torch.nn.Module) -> str:
    """Why ``model`` cannot be streamed exactly (by :func:`make_stream`), or '' if it can."""
    errors = []
    if getattr(model, "normalize_variance", False):
        errors.append("normalize_variance: true scales by the whole utterance's deviation (not causal)")
    if getattr(model, "num_spk", 1) != 1:
        errors.append(f"num_spk {model.num_spk}: the stream takes single-output models")
    if any(isinstance(m, torch.nn.LSTM) and m.bidirectional for m in model.separator.modules()):
        errors.append(f"separator {type(model.separator).__name__}: its bidirectional LSTM reads the utterance "
                      "backwards (not causal): use a unidirectional one")
    if isinstance(model.separator, DCCRNSeparator):
        errors += _dccrn_errors(model)
    elif isinstance(model.separator, TCNSeparator):
        errors += _conv_tasnet_errors(model)
        if not isinstance(model.encoder, ConvEncoder) or not isinstance(model.decoder, ConvDecoder):
            errors.append(f"encoder {type(model.encoder).__name__} / decoder {type(model.decoder).__name__}: the tcn "
                          "separator is streamed with Conv-TasNet's conv encoder and decoder")
    else:
        errors.append(f"separator {type(model.separator).__name__}: the streaming path takes the tcn (Conv-TasNet) "
                      "and dccrn separators")
    return "; ".join(errors)


@dataclass
class StreamState:
    """What a stream carries from one call to the next."""

    pending: torch.Tensor  # (batch, samples) input not yet framed (before the first frame: all of it)
    tensors: List[torch.Tensor]  # the step's state, named by the stream's state_names
    frames: int = 0  # frames computed so far
    produced: int = 0  # output samples the step returned so far, before the stream's offset is cut
    received: int = 0  # input samples taken so far


@dataclass
class StftStreamState(StreamState):
    """A DCCRN stream's: also the last input samples, which the end's reflect padding reads."""

    recent: torch.Tensor = field(default_factory=lambda: torch.zeros(1, 0))


class BlockStream(torch.nn.Module):
    """What the streams share: the framing of the input, the first call, the cut of leading samples.

    A stream sets ``window`` (input samples of a frame), ``hop``, ``need`` (samples from a frame's start on
    that must have arrived before it is computed, at least ``window``), ``lookahead`` (frames),
    ``offset`` (output samples before the signal's first one), ``first_frames`` (frames of the first call),
    ``state_names`` and ``dynamic_state`` ({name: frame axis} of state tensors whose length changes after
    the first call), and implements ``forward`` (one call on whole frames), :meth:`initial_tensors` and
    :meth:`flush`.

    Shape:
        :meth:`step`: block (batch, any length) -> (batch, m) output samples that are final;
        :meth:`flush`: the rest, up to the number of input samples.
    """

    lookahead, offset, first_frames = 0, 0, 1
    extra_names: Tuple[str, ...] = ()  # inputs of forward between the samples and the state
    dynamic_state: Dict[str, int] = {}

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        why = streaming_error(model)
        if why:
            raise NotStreamableError(why)
        # an inference module: the exporter restores the mode it found, which must not put BatchNorm in training
        self.train(False)

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency: the input a frame needs (the window) plus the lookahead frames."""
        return self.need + self.lookahead * self.hop

    def initial_tensors(self, batch: int) -> List[torch.Tensor]:
        raise NotImplementedError

    def initial_state(self, batch: int = 1) -> StreamState:
        return StreamState(torch.zeros(batch, 0), self.initial_tensors(batch))

    def _signal(self, state: StreamState) -> Optional[torch.Tensor]:
        """The samples framed from the next frame's start on (None: the first frame cannot be formed yet)."""
        return state.pending

    def extra_inputs(self, final: bool) -> Tuple[torch.Tensor, ...]:
        """The inputs named by ``extra_names`` for a call (``final``: the stream's last)."""
        return ()

    def _call(self, signal: torch.Tensor, n: int, state: StreamState, core: Optional[Callable[..., Sequence]],
              final: bool = False) -> torch.Tensor:
        """Run the step on the first ``n`` frames of ``signal`` (batch, samples), keep the rest pending."""
        out, *state.tensors = (core or self)(signal[:, :(n - 1) * self.hop + self.window], *self.extra_inputs(final),
                                             *state.tensors)
        state.pending, state.frames = signal[:, n * self.hop:], state.frames + n
        cut = min(max(self.offset - state.produced, 0), out.shape[1])
        state.produced += out.shape[1]
        return out[:, cut:]

    def emitted(self, state: StreamState) -> int:
        """Output samples returned so far."""
        return max(state.produced - self.offset, 0)

    @torch.no_grad()
    def step(self, block: torch.Tensor, state: StreamState, core: Optional[Callable[..., Sequence]] = None) -> torch.Tensor:
        """Take ``block`` (batch, any length) and return the output samples that became final.

        Args:
            core: what runs ``forward`` (default: this module; e.g. an onnxruntime session's wrapper).
        """
        state.received += block.shape[1]
        state.pending = torch.cat([state.pending, block], dim=1)
        signal = self._signal(state)
        n = (signal.shape[1] - self.need) // self.hop + 1 if signal is not None and signal.shape[1] >= self.need else 0
        if n < (self.first_frames if state.frames == 0 else 1):
            return block.new_zeros(block.shape[0], 0)
        return self._call(signal, n, state, core)

    def flush(self, state: StreamState, core: Optional[Callable[..., Sequence]] = None) -> torch.Tensor:
        raise NotImplementedError

    def run(self, wav: torch.Tensor, block: int) -> torch.Tensor:
        """Stream ``wav`` (batch, samples) through in blocks of ``block`` samples: (batch, samples)."""
        return _stream(self, wav, block)[0]

    def example_state(self) -> StreamState:
        """The state after a few frames of noise (every state tensor at its steady-state length)."""
        state = self.initial_state(1)
        noise = torch.randn(1, self.need + (self.first_frames + 1) * self.hop, generator=torch.Generator().manual_seed(0))
        self.step(noise, state)
        return state


class StreamingConvTasNet(BlockStream):
    """Streaming inference of a causal espnet2 Conv-TasNet (single output); same weights, same modules.

    Shape: as :class:`BlockStream`; :meth:`step` returns multiples of the stride S.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__(model)
        self.enc, self.dec, self.sep = model.encoder.conv1d, model.decoder.convtrans1d, model.separator
        self.window = self.need = model.encoder.kernel_size
        self.hop = model.encoder.stride
        self.tcn = self.sep.tcn
        self.layers = [layer for block in self.tcn.network[2] for layer in block]
        self.state_names = ("tail", *[f"conv_state_{i}" for i in range(len(self.layers))])

    def initial_tensors(self, batch: int) -> List[torch.Tensor]:
        buffers = []
        for layer in self.layers:
            conv = layer.net[3].net[0]
            buffers.append(torch.zeros(batch, conv.in_channels, (conv.kernel_size[0] - 1) * conv.dilation[0]))
        return [torch.zeros(batch, self.window - self.hop), *buffers]

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
        """One call on whole frames, without Python state (the graph of the ONNX stream, :func:`export_stream_onnx`).

        Shape:
            samples: (batch, (n - 1) * S + K), the samples of n frames; tail: (batch, K - S); buffers: as
            :meth:`initial_tensors`. Returns (n * S final output samples, the new tail, the new buffers).
        """
        masked, new_buffers = self._separate(F.relu(self.enc(samples.unsqueeze(1))), list(buffers))
        wav = self.dec(masked).squeeze(1)  # (batch, (n - 1) * S + K)
        k = tail.shape[1]
        wav = torch.cat([wav[:, :k] + tail, wav[:, k:]], dim=1)
        return (wav[:, :wav.shape[1] - k], wav[:, wav.shape[1] - k:], *new_buffers)

    def flush(self, state: StreamState, core: Optional[Callable[..., Sequence]] = None) -> torch.Tensor:
        """The decoder's tail and zeros up to the input length (as the offline decoder pads)."""
        rest = max(state.received - self.emitted(state), 0)
        tail = state.tensors[0]
        tail = F.pad(tail, (0, max(rest - tail.shape[1], 0)))[:, :rest]
        state.produced += tail.shape[1]
        return tail


def _complex_conv(conv: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """espnet2's ComplexConv2d / ComplexConvTranspose2d product without ComplexConv2d's time padding (the
    stream supplies the past frame), the real and imaginary parts run as one batch.

    Shape: (batch, 2 * C, F, T) -> (batch, 2 * C', F', T') as the module's real and imaginary convolutions give.
    """
    b = x.shape[0]
    both = torch.cat(x.chunk(2, dim=1), dim=0)  # (2 * batch, C, F, T): real, then imaginary
    by_real, by_imag = conv.real_conv(both), conv.imag_conv(both)
    return torch.cat([by_real[:b] - by_imag[b:], by_imag[:b] + by_real[b:]], dim=1)


class StreamingDCCRN(BlockStream):
    """Streaming inference of an espnet2 DCCRN / DCCRN-CL (single output, unidirectional LSTMs); same weights.

    Shape: as :class:`BlockStream`; ``forward`` takes ``end`` after the samples (see there).
    """

    extra_names = ("end",)

    def __init__(self, model: torch.nn.Module):
        super().__init__(model)
        self.sep = model.separator
        n_fft, self.hop, self.window, window = stft_options(model.encoder, "encoder")
        left = (n_fft - self.window) // 2  # the window's place in the FFT frame, as torch.stft pads it
        self.n_fft, self.pad = n_fft, n_fft // 2 - left  # the reflect padding at the start, in window coordinates
        # a frame is not computed before the next one has begun: the last frame (reflect-padded) is the flush's
        self.need = max(self.window, self.pad + self.hop)
        self.keep = self.window - self.pad + 1  # the last input samples the end's reflect padding reads
        self.lookahead = len(self.sep.decoder)
        self.offset, self.first_frames = self.pad, self.lookahead + 1
        cut = slice(left, left + self.window)
        istft = ConvISTFT(n_fft, self.hop, self.window, window)
        self.register_buffer("analysis", ConvSTFT(n_fft, self.hop, self.window, window).weight[..., cut], persistent=False)
        self.register_buffer("synthesis", istft.weight[..., cut], persistent=False)
        self.register_buffer("window_sq", istft.window_sq[..., cut], persistent=False)
        self.shapes = self._layer_shapes()
        layers = len(self.sep.encoder)
        rnn = [f"lstm_{i}_{part}" for i in range(len(self.sep.enhance)) for part in ("rh", "rc", "ih", "ic")] \
            if self.sep.use_clstm else ["lstm_h", "lstm_c"]
        dec = [f"dec_state_{i}" for i in range(layers)]
        skip = [f"skip_state_{i}" for i in range(1, layers)]
        self.state_names = (*[f"enc_state_{i}" for i in range(layers)], *rnn, *dec, *skip, "spec_state",
                            "ola", "ola_norm")
        self.dynamic_state = {name: 3 for name in (*dec, *skip, "spec_state")}

    def _layer_shapes(self) -> Dict[str, List[Tuple[int, int]]]:
        """(channels, frequencies) of each encoder layer's input and output (real and imaginary channels)."""
        freq, ins, outs = self.n_fft // 2, [], []  # the separator drops the DC bin
        for layer in self.sep.encoder:
            conv = layer[0].real_conv
            ins.append((2 * conv.in_channels, freq))
            freq = (freq + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
            outs.append((2 * conv.out_channels, freq))
        return {"enc_in": ins, "enc_out": outs}

    def initial_tensors(self, batch: int) -> List[torch.Tensor]:
        """Zeros: the encoder's causal padding, the LSTM states, empty decoder and skip buffers, empty spectrum
        frames, the overlap-add tails."""
        enc = [torch.zeros(batch, c, f, 1) for c, f in self.shapes["enc_in"]]
        if self.sep.use_clstm:
            rnn = [torch.zeros(1, 2 * batch, lstm.hidden_size) for layer in self.sep.enhance
                   for lstm in (layer.real_lstm, layer.real_lstm, layer.imag_lstm, layer.imag_lstm)]
        else:
            lstm = self.sep.enhance
            rnn = [torch.zeros(lstm.num_layers, batch, lstm.hidden_size) for _ in range(2)]
        outs = self.shapes["enc_out"]
        dec = [torch.zeros(batch, 2 * layer[0].real_conv.in_channels, outs[-1 - i][1], 0)
               for i, layer in enumerate(self.sep.decoder)]
        skip = [torch.zeros(batch, c, f, 0) for c, f in outs[-2::-1]]
        tails = [torch.zeros(batch, self.window - self.hop) for _ in range(2)]
        return [*enc, *rnn, *dec, *skip, torch.zeros(batch, 2, self.n_fft // 2 + 1, 0), *tails]

    def _lstm(self, x: torch.Tensor, states: List[torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """The separator's (complex) LSTM with its states carried. Shape: (batch, C, F, n) -> same."""
        b, c, f = x.shape[:3]
        x = x.permute(3, 0, 1, 2)  # (n, batch, C, F)
        if not self.sep.use_clstm:
            out, (h, cell) = self.sep.enhance(x.reshape(-1, b, c * f), (states[0], states[1]))
            return self.sep.tranform(out).reshape(-1, b, c, f).permute(1, 2, 3, 0), [h, cell]
        real, imag = x[:, :, :c // 2].reshape(-1, b, c // 2 * f), x[:, :, c // 2:].reshape(-1, b, c // 2 * f)
        new = []
        for i, layer in enumerate(self.sep.enhance):
            rh, rc, ih, ic = states[4 * i:4 * i + 4]
            both = torch.cat([real, imag], dim=1)  # NavieComplexLSTM runs each LSTM on both parts
            by_real, (rh, rc) = layer.real_lstm(both, (rh, rc))
            by_imag, (ih, ic) = layer.imag_lstm(both, (ih, ic))
            real, imag = by_real[:, :b] - by_imag[:, b:], by_real[:, b:] + by_imag[:, :b]
            if layer.projection_dim is not None:
                real, imag = layer.r_trans(real), layer.i_trans(imag)
            new += [rh, rc, ih, ic]
        out = torch.cat([real.reshape(-1, b, c // 2, f), imag.reshape(-1, b, c // 2, f)], dim=2)
        return out.permute(1, 2, 3, 0), new

    def forward(self, samples: torch.Tensor, end: torch.Tensor, *state: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """One call on whole frames, without Python state (the graph of the ONNX stream, :func:`export_stream_onnx`).

        Shape:
            samples: (batch, (n - 1) * hop + window), the windows of n frames (the first ``pad`` samples of the
            stream are the reflection of the signal's start); end: (z,) zeros, z = 1 on the stream's last call
            (the zero frame each decoder layer's offline input ends with), else z = 0; state: as
            :meth:`initial_tensors`. Returns (the output samples these frames made final, the new state).
        """
        layers = len(self.sep.encoder)
        rnn = 4 * len(self.sep.enhance) if self.sep.use_clstm else 2
        enc_state, rnn_state = state[:layers], list(state[layers:layers + rnn])
        dec_state, skip_state = state[layers + rnn:2 * layers + rnn], state[2 * layers + rnn:3 * layers + rnn - 1]
        spec_state, ola, ola_norm = state[-3:]
        spec = F.conv1d(samples.unsqueeze(1), self.analysis, stride=self.hop)  # (batch, 2 * freq, n)
        spec = spec.view(spec.shape[0], 2, -1, spec.shape[2])  # (batch, real/imag, freq, n)
        x, skips, new_enc = spec[:, :, 1:], [], []
        for layer, past in zip(self.sep.encoder, enc_state):
            x = torch.cat([past, x], dim=3)
            new_enc.append(x[..., -1:])
            x = layer[1:](_complex_conv(layer[0], x))
            skips.append(x)
        x, new_rnn = self._lstm(x, rnn_state)
        new_dec, new_skip = [], []
        for i, (layer, past) in enumerate(zip(self.sep.decoder, dec_state)):
            skip = skips[-1 - i] if i == 0 else torch.cat([skip_state[i - 1], skips[-1 - i]], dim=3)
            k = x.shape[3]
            if i:
                new_skip.append(skip[..., k:])
            x = torch.cat([past, complex_cat([x, skip[..., :k]], 1)], dim=3)
            new_dec.append(x[..., -1:])
            x = torch.cat([x, torch.zeros_like(x[..., :1]).expand(-1, -1, -1, end.shape[0])], dim=3)
            x = layer[1:](_complex_conv(layer[0], x)[..., 1:-1])  # frame t from input frames t and t + 1
        spec = torch.cat([spec_state, spec], dim=3)
        mix = spec[..., :x.shape[3]]
        with real_complex_outputs(self.sep):
            est = self.sep.apply_masks(self.sep.create_masks(x), mix[:, 0], mix[:, 1])[0]  # (batch, m, freq)
        frames = torch.cat([est.real, est.imag], dim=2).transpose(1, 2)  # (batch, 2 * freq, m)
        wav = F.conv_transpose1d(frames, self.synthesis, stride=self.hop)[:, 0]  # (batch, (m - 1) * hop + window)
        norm = F.conv_transpose1d(torch.ones_like(frames[:1, :1]), self.window_sq, stride=self.hop)[:, 0]
        k = ola.shape[1]
        wav = torch.cat([wav[:, :k] + ola, wav[:, k:]], dim=1)
        norm = torch.cat([norm[:, :k] + ola_norm, norm.expand(wav.shape[0], -1)[:, k:]], dim=1)
        done = wav.shape[1] - k
        # torch.istft refuses a window sum below 1e-11 inside the kept samples; here it only guards a 0/0
        out = wav[:, :done] / norm[:, :done].clamp_min(1e-11)
        return (out, *new_enc, *new_rnn, *new_dec, *new_skip, spec[..., x.shape[3]:], wav[:, done:], norm[:, done:])

    def initial_state(self, batch: int = 1) -> StftStreamState:
        return StftStreamState(torch.zeros(batch, 0), self.initial_tensors(batch), recent=torch.zeros(batch, 0))

    def _signal(self, state: StreamState) -> Optional[torch.Tensor]:
        if state.frames:
            return state.pending
        x = state.pending
        if x.shape[1] <= self.pad:
            return None
        return torch.cat([x[:, 1:self.pad + 1].flip(1), x], dim=1)  # torch.stft's reflect padding

    def extra_inputs(self, final: bool) -> Tuple[torch.Tensor, ...]:
        return (torch.zeros(1 if final else 0),)

    @torch.no_grad()
    def step(self, block: torch.Tensor, state: StftStreamState, core: Optional[Callable[..., Sequence]] = None) -> torch.Tensor:
        state.recent = torch.cat([state.recent, block], dim=1)[:, -self.keep:]
        return super().step(block, state, core)

    @torch.no_grad()
    def flush(self, state: StftStreamState, core: Optional[Callable[..., Sequence]] = None) -> torch.Tensor:
        """The frames left, with the reflect padding of the end, and the overlap-add tail, up to the input length."""
        signal = self._signal(state)
        if signal is None:
            raise ValueError(f"{state.received} input samples: the STFT's reflect padding needs more than {self.pad}")
        before = self.emitted(state)
        n = 1 + (state.received + 2 * (self.n_fft // 2) - self.n_fft) // self.hop - state.frames  # torch.stft's count
        pad = max((n - 1) * self.hop + self.window - signal.shape[1], 0)
        signal = torch.cat([signal, state.recent[:, state.recent.shape[1] - 1 - pad:-1].flip(1)], dim=1)
        out = self._call(signal, n, state, core, final=True)
        ola, ola_norm = state.tensors[-2:]
        tail = (ola / ola_norm.clamp_min(1e-11))[:, max(self.offset - state.produced, 0):]
        state.produced += ola.shape[1]
        rest = max(state.received - before, 0)
        out = torch.cat([out, tail], dim=1)
        return F.pad(out, (0, max(rest - out.shape[1], 0)))[:, :rest]


def make_stream(model: torch.nn.Module) -> BlockStream:
    """The stream of ``model`` (eval mode): :class:`StreamingDCCRN` or :class:`StreamingConvTasNet`."""
    kind = StreamingDCCRN if isinstance(model.separator, DCCRNSeparator) else StreamingConvTasNet
    return kind(model)


def export_stream_onnx(stream: BlockStream, path: Path, opset: int = MIN_OPSET) -> Path:
    """The stream's ``forward`` as an ONNX graph, the state as inputs and outputs (TorchScript exporter).

    Inputs ``samples`` (batch, (n - 1) * hop + window: any whole number of frames), the stream's
    ``extra_names`` (DCCRN: ``end``), its ``state_names``; outputs ``enhanced`` and ``<state name>_out``.
    The initial state is the stream's :meth:`~BlockStream.initial_tensors`; the caller keeps the samples
    framed again next time (:meth:`BlockStream.step` with an onnxruntime core, :func:`onnx_core`).
    """
    tensors = stream.example_state().tensors
    example = (torch.zeros(1, stream.window + 3 * stream.hop), *stream.extra_inputs(True), *tensors)
    names = list(stream.state_names)
    axes = {"samples": {1: "samples"}, "enhanced": {1: "out_samples"}, **{n: {0: n} for n in stream.extra_names}}
    for name, axis in stream.dynamic_state.items():
        axes.update({name: {axis: f"{name}_frames"}, f"{name}_out": {axis: f"{name}_out_frames"}})
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad(), torchscript_symbolics(opset):
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
        torch.onnx.export(stream, example, str(tmp), dynamo=False, opset_version=opset,
                          input_names=["samples", *stream.extra_names, *names],
                          output_names=["enhanced", *[f"{n}_out" for n in names]], dynamic_axes=axes)
    return Path(path)


def onnx_core(session) -> Callable[..., List[torch.Tensor]]:
    """A stream's ``forward`` run by an onnxruntime session of :func:`export_stream_onnx`'s graph."""
    names = [i.name for i in session.get_inputs()]

    def run(*tensors: torch.Tensor) -> List[torch.Tensor]:
        return [torch.from_numpy(x) for x in session.run(None, dict(zip(names, (t.numpy() for t in tensors))))]

    return run


def _stream(stream: BlockStream, x: torch.Tensor, block: int, core=None) -> Tuple[torch.Tensor, List[float]]:
    """The streamed output of ``x`` (batch, samples) in blocks of ``block`` samples, and the time of each step."""
    state, pieces, times = stream.initial_state(x.shape[0]), [], []
    for i in range(0, x.shape[1], block):
        start = time.perf_counter()
        pieces.append(stream.step(x[:, i:i + block], state, core))
        times.append(time.perf_counter() - start)
    return torch.cat(pieces + [stream.flush(state, core)], dim=1), times


@dataclass
class StreamingReport:
    """Streaming vs offline on test audio, algorithmic latency and per-block speed on one thread."""

    block_samples: int
    block_ms: float
    latency_samples: int
    latency_ms: float  # window + lookahead; the block adds up to block_ms of buffering
    max_abs_diff: float  # streaming vs offline (espnet2's forward), all utterances checked
    utterances: int
    rtf_per_block: float  # median time of one block step / block duration
    threads: int = 1
    onnx_max_abs_diff: Optional[float] = None  # the same with the ONNX stream graph run by onnxruntime
    onnx_rtf_per_block: Optional[float] = None
    window_ms: Optional[float] = None  # the two parts of latency_ms
    lookahead_ms: Optional[float] = None


def streaming_report(model: torch.nn.Module, audio: Dict[str, "torch.Tensor"], fs: int, block_ms: float = 10.0,
                     threads: int = 1, onnx_path: Optional[Path] = None) -> StreamingReport:
    """Stream every utterance of ``audio`` ({utt: (samples,) array}) through :func:`make_stream` (and, with
    ``onnx_path``, through its ONNX stream graph written there) and compare with the offline output; each
    block step is timed on ``threads`` threads (the median step over the block's duration)."""
    from dispatch.export.check import ort_session
    from dispatch.teacher import teacher_enhance

    stream = make_stream(model)
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
    ms = 1000 / fs
    return StreamingReport(block, block * ms, stream.latency_samples, stream.latency_samples * ms, worst["torch"],
                           len(audio), rtf["torch"], threads, worst.get("onnx"), rtf.get("onnx"),
                           window_ms=stream.need * ms, lookahead_ms=stream.lookahead * stream.hop * ms)
