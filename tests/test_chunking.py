"""What the chunk iterator uses of a set, checked against espnet2's ChunkIterFactory; training refuses data loss."""
import logging

import numpy as np
import pytest
import torch
import yaml
from conftest import FS, data_args, run_module, write_data_dir
from espnet2.iterators.chunk_iter_factory import ChunkIterFactory

from dispatch.chunking import ChunkingError, check_chunking, chunk_coverage, parse_chunk_length


class _Dataset:
    """Enough of ESPnetDataset for the chunk iterator: one noisy/clean pair of `lengths[i]` samples."""

    def __init__(self, lengths):
        self.lengths = lengths

    def __getitem__(self, uid):
        n = self.lengths[uid]
        return uid, {"speech_mix": np.ones(n, np.float32), "speech_ref1": np.ones(n, np.float32)}


def _collate(data):
    uids = [u for u, _ in data]
    out = {}
    for key in data[0][1]:
        seqs = [torch.from_numpy(d[key]) for _, d in data]
        out[key] = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
        out[key + "_lengths"] = torch.tensor([len(s) for s in seqs])
    return uids, out


def espnet2_epoch(lengths, chunk_length, batch_size, discard):
    """(number of batches, set of utterances seen) of one epoch of espnet2's own chunk iterator."""
    factory = ChunkIterFactory(dataset=_Dataset(lengths), batches=[[u] for u in lengths], batch_size=batch_size,
                               chunk_length=chunk_length, collate_fn=_collate, discard_short_samples=discard,
                               shuffle=False)
    seen, batches = set(), 0
    for uids, _ in factory.build_iter(1):
        batches += 1
        seen.update(uids)
    return batches, seen


@pytest.mark.parametrize("discard", [True, False])
def test_coverage_matches_espnet2_iterator(discard):
    rng = np.random.default_rng(0)
    # VoiceBank+DEMAND-like: 1.5-8 s at 16 kHz, most under 4 s; one exactly 4 s (espnet2 needs L > W).
    lengths = {f"u{i:03d}": int(FS * s) for i, s in enumerate(np.clip(rng.lognormal(1.0, 0.4, 60), 1.5, 8.0))}
    lengths["u_exact"] = 64000
    cov = chunk_coverage(list(lengths.values()), 64000, batch_size=4, discard_short_samples=discard)
    batches, seen = espnet2_epoch(lengths, 64000, 4, discard)
    short = [u for u, n in lengths.items() if n <= 64000]
    assert cov.num_dropped == (len(short) if discard else 0)
    assert cov.num_whole == (0 if discard else len(short))
    assert cov.num_batches == batches
    assert cov.num_utts - cov.num_dropped >= len(seen)  # leftover chunks under batch_size are not seen
    if discard:
        assert not seen & set(short) and cov.dropped_samples == sum(lengths[u] for u in short)


def test_coverage_counts_used_audio():
    # 10 s with 4 s chunks shifted by 2 s: chunks at 0, 2, 4, 6 cover all 10 s; 5 s: one chunk, 4 of 5 s.
    cov = chunk_coverage([160000, 80000], 64000, batch_size=1)
    assert (cov.num_chunks, cov.num_batches, cov.used_samples) == (5, 5, 160000 + 64000)
    assert cov.used_audio_share == pytest.approx(224000 / 240000)


def test_parse_chunk_length_like_espnet2():
    assert parse_chunk_length(64000) == [64000]
    assert parse_chunk_length("32000,64000") == [32000, 64000]
    assert parse_chunk_length("10-12") == [10, 11, 12]


def test_check_refuses_dropping_and_empty_sets(tmp_path):
    shape = tmp_path / "speech_mix_shape"
    shape.write_text("a 48000\nb 96000\nc 30000\n")
    with pytest.raises(ChunkingError, match=r"drop 2 of 3 utterances .*speech_mix_shape\) with chunk_length=64000"):
        check_chunking({"train": shape}, 64000, batch_size=1)
    report = check_chunking({"train": shape}, 64000, batch_size=1, max_dropped_share=0.7)
    assert report["train"].num_dropped == 2
    assert check_chunking({"train": shape}, 64000, 1, discard_short_samples=False)["train"].num_whole == 2
    with pytest.raises(ChunkingError, match="gives no batch: 2 chunks per epoch"):
        check_chunking({"valid": shape}, 64000, batch_size=4, max_dropped_share=1.0)
    shape.write_text("a 48000\nb\n")
    with pytest.raises(ChunkingError, match="speech_mix_shape:2: expected 'utt_id num_samples'"):
        check_chunking({"train": shape}, 64000, batch_size=1)


STUDENT = {
    "encoder": "stft", "encoder_conf": {"n_fft": 128, "hop_length": 32},
    "decoder": "stft", "decoder_conf": {"n_fft": 128, "hop_length": 32},
    # Not an RNN: espnet2's RNN separator packs sequences and refuses the unsorted lengths of the padded
    # batches that chunk_discard_short_samples: false makes.
    "separator": "tcn", "separator_conf": {"num_spk": 1, "layer": 2, "stack": 1, "bottleneck_dim": 8,
                                          "hidden_dim": 16, "kernel": 3},
    "criterions": [{"name": "si_snr", "conf": {"eps": 1.0e-7}, "wrapper": "fixed_order",
                    "wrapper_conf": {"weight": 1.0}}],
    "iterator_type": "chunk", "batch_type": "folded", "batch_size": 2, "max_epoch": 1,
    "optim": "adam", "best_model_criterion": [["valid", "loss", "min"]], "num_workers": 0,
}


@pytest.fixture(scope="module")
def short_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("short")
    write_data_dir(root, "train", 6, seed=0, seconds=(0.8, 1.2))
    write_data_dir(root, "valid", 2, seed=1, seconds=(0.8, 1.2))
    return root


def train(tmp_path, data, **conf):
    config = tmp_path / "conf.yaml"
    config.write_text(yaml.safe_dump({**STUDENT, **conf}))
    return run_module("dispatch.bin.enh_kd_train", "--config", config, "--output_dir", tmp_path / "exp",
                      *data_args(data), check=False)


def test_training_refuses_chunks_longer_than_the_data(tmp_path, short_data):
    proc = train(tmp_path, short_data, chunk_length=32000)
    assert proc.returncode != 0
    assert "enh_kd_train: error: the chunk iterator would drop 6 of 6 utterances" in proc.stderr
    assert "--chunk_max_dropped_share" in proc.stderr and "KeyError" not in proc.stderr
    assert not (tmp_path / "exp" / "checkpoint.pth").exists()


def test_training_reports_coverage_and_keeps_short_utterances_whole(tmp_path, short_data):
    proc = train(tmp_path, short_data, chunk_length=32000, chunk_discard_short_samples=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "chunk iterator, train set: 6 utterances" in proc.stderr
    assert "6 shorter than every chunk kept whole" in proc.stderr


def test_num_iters_per_epoch_counting_utterances_is_refused_when_no_batch(tmp_path, short_data):
    proc = train(tmp_path, short_data, chunk_length=8000, batch_size=4, num_iters_per_epoch=1)
    assert proc.returncode != 0
    assert "--num_iters_per_epoch 1 with iterator_type chunk reads 1 utterances per epoch" in proc.stderr


def test_trainer_refuses_an_epoch_without_batches():
    from espnet2.train.distributed_utils import DistributedOption
    from espnet2.train.reporter import Reporter

    from dispatch.task import EnhancementKDTask
    from dispatch.trainer import KDTrainer, NoBatchError

    args = EnhancementKDTask.get_parser().parse_args(["--output_dir", "unused", "--ngpu", "0"])
    options = KDTrainer.build_options(args)
    model = torch.nn.Linear(1, 1)
    reporter = Reporter()
    reporter.set_epoch(3)
    logging.disable(logging.WARNING)
    try:
        with pytest.raises(NoBatchError, match="training iterator gave no batch in epoch 3"):
            with reporter.observe("train") as sub:
                KDTrainer.train_one_epoch(model=model, iterator=[], optimizers=[torch.optim.SGD(model.parameters())],
                                          schedulers=[None], scaler=None, reporter=sub, summary_writer=None,
                                          options=options, distributed_option=DistributedOption())
        with pytest.raises(NoBatchError, match="validation iterator gave no batch"):
            with reporter.observe("valid") as sub:
                KDTrainer.validate_one_epoch(model=model, iterator=[], reporter=sub, options=options,
                                             distributed_option=DistributedOption())
    finally:
        logging.disable(logging.NOTSET)
