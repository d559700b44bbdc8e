"""An espnet2 enhancement model as one real-valued ``waveform -> waveform`` module, for ONNX export.

:class:`ExportableEnhancer` runs the model's own separator and convolutional encoder/decoder (same
weights, same code); only espnet2's STFT encoder/decoder are replaced by their DFT-convolution
equivalents (:mod:`dispatch.export.dft`), the spectrum handed to the separator as a
``torch_complex.ComplexTensor`` (a pair of real tensors, which espnet2's separators accept) instead of
a complex tensor. Frame lengths and pad masks are not computed: the graph takes one utterance per
batch row, all rows of the same length, as an exported model is called.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from espnet2.enh.decoder.conv_decoder import ConvDecoder
from espnet2.enh.decoder.stft_decoder import STFTDecoder
from espnet2.enh.encoder.conv_encoder import ConvEncoder
from espnet2.enh.encoder.stft_encoder import STFTEncoder
from torch_complex.tensor import ComplexTensor

from dispatch.export.dft import ConvISTFT, ConvSTFT


class NotExportableError(ValueError):
    """A model this exporter cannot translate; the message names the module or option and what is supported."""


def stft_options(module: torch.nn.Module, what: str) -> Tuple[int, int, int, str]:
    """(n_fft, hop_length, win_length, window) of espnet2's STFT encoder/decoder, or NotExportableError."""
    stft = module.stft
    unsupported = {
        "center": (stft.center, True), "normalized": (stft.normalized, False), "onesided": (stft.onesided, True),
        "spec_transform_type": (getattr(module, "spec_transform_type", None), None),
    }
    for option, (value, wanted) in unsupported.items():
        if value != wanted:
            raise NotExportableError(f"{what}_conf {option}: {value} (the DFT-convolution STFT supports {wanted})")
    if stft.window is None:
        raise NotExportableError(f"{what}_conf window: None (the DFT-convolution STFT needs a window name)")
    return stft.n_fft, stft.hop_length, stft.win_length or stft.n_fft, stft.window


class ExportableEnhancer(torch.nn.Module):
    """``mix -> enhanced`` of an espnet2 ``ESPnetEnhancementModel`` (single output, eval mode).

    Args:
        model: the enhancement model (its encoder, separator and decoder are used, not copied).

    Shape:
        mix: (batch, samples); output: (batch, samples).
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        if getattr(model, "num_spk", 1) != 1:
            raise NotExportableError(f"num_spk {model.num_spk}: the export takes single-output enhancement models")
        for what, module, kinds in (("encoder", model.encoder, (STFTEncoder, ConvEncoder)),
                                    ("decoder", model.decoder, (STFTDecoder, ConvDecoder))):
            if not isinstance(module, kinds):
                raise NotExportableError(
                    f"{what} {type(module).__name__}: supported are {', '.join(k.__name__ for k in kinds)}")
        self.separator = model.separator
        self.normalize_variance = bool(getattr(model, "normalize_variance", False))
        self.encoder = model.encoder if isinstance(model.encoder, ConvEncoder) else None
        self.stft = ConvSTFT(*stft_options(model.encoder, "encoder")) if self.encoder is None else None
        self.decoder = model.decoder if isinstance(model.decoder, ConvDecoder) else None
        self.istft = ConvISTFT(*stft_options(model.decoder, "decoder")) if self.decoder is None else None

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        samples = mix.shape[1]
        scale = mix.std(dim=1, keepdim=True) if self.normalize_variance else None  # as SeparateSpeech
        x = mix / scale if scale is not None else mix
        if self.stft is not None:
            feature = ComplexTensor(*self.stft(x))
        else:
            feature = F.relu(self.encoder.conv1d(x.unsqueeze(1))).transpose(1, 2)
        lengths = torch.full((mix.shape[0],), feature.shape[1], dtype=torch.long)
        with real_complex_outputs(self.separator):
            (estimate, *_), _, _ = self.separator(feature, lengths, {})
        if self.istft is not None:
            wav = self.istft(estimate.real, estimate.imag, samples)
        else:
            wav = self.decoder.convtrans1d(estimate.transpose(1, 2)).squeeze(1)
            # espnet2 passes output_size=samples: the extra samples get no frame (and no bias: bias=False)
            wav = F.pad(wav, (0, samples - wav.shape[-1]))
        return wav * scale if scale is not None else wav


class real_complex_outputs:
    """Separators with ``use_builtin_complex`` (DCCRN) build torch complex outputs unless it is False:
    switched off for the call, so that they return ComplexTensor pairs of real tensors."""

    def __init__(self, separator: torch.nn.Module):
        self.separator = separator
        self.saved = getattr(separator, "use_builtin_complex", None)

    def __enter__(self) -> None:
        if self.saved is not None:
            self.separator.use_builtin_complex = False

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            self.separator.use_builtin_complex = self.saved
