"""dispatch.bin.format_data split as stage 2 runs it: --check, --prepare, --part J --num_parts N, --merge."""
import json
from pathlib import Path

import pytest
from conftest import write_data_dir

from dispatch.bin import format_data
from dispatch.data.datadir import read_scp, validate_data_dir
from dispatch.data.formatting import PairJob


def fmt(src: Path, dst: Path, *extra) -> int:
    return format_data.main([str(src), str(dst), "--fs", "8000", *map(str, extra)])


def test_parts_then_merge_equal_the_whole(tmp_path, capsys):
    src = write_data_dir(tmp_path / "data", "tr", 5, 0)
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert fmt(src, whole) == 0
    assert fmt(src, split, "--check") == 1
    assert fmt(src, split, "--part", 1, "--num_parts", 2) == 1  # not prepared yet
    assert "run format_data --prepare" in capsys.readouterr().err
    assert fmt(src, split, "--prepare") == 0
    assert fmt(src, split, "--part", 2, "--num_parts", 2) == 0
    assert fmt(src, split, "--merge") == 1  # part 1 missing
    assert "3 of 5 utterances are not converted yet" in capsys.readouterr().err
    assert fmt(src, split, "--part", 1, "--num_parts", 2) == 0
    assert fmt(src, split, "--merge") == 0
    assert fmt(src, split, "--check") == 0 and not (split / format_data.PARTS).exists()
    assert validate_data_dir(split, fs=8000) == 5
    for name in ("utt2num_samples", "utt2spk"):
        assert read_scp(split / name) == read_scp(whole / name)
    assert json.loads((split / format_data.STAMP).read_text()) == json.loads((whole / format_data.STAMP).read_text())
    # the split run's stamp vouches for the whole run too: nothing is rewritten
    stamp = (split / format_data.STAMP).stat().st_mtime_ns
    assert fmt(src, split) == 0 and (split / format_data.STAMP).stat().st_mtime_ns == stamp


def test_a_recordings_segments_stay_in_one_share():
    def job(utt, rec):
        return PairJob(utt, f"{rec}_noisy.wav", f"{rec}_clean.wav", Path("n"), Path("c"), 8000)

    jobs = [job("a-0", "a"), job("a-1", "a"), job("b-0", "b"), job("c-0", "c"), job("c-1", "c")]
    shares = [format_data.share(jobs, part, 2) for part in (1, 2)]
    assert [[j.utt for j in s] for s in shares] == [["a-0", "a-1", "c-0", "c-1"], ["b-0"]]


def test_a_bad_list_is_named_by_prepare_not_by_check(tmp_path, capsys):
    src = write_data_dir(tmp_path / "data", "tr", 2, 0)
    (src / "utt2spk").write_text("tr_001 tr_001\ntr_000 tr_000\n")  # unsorted
    assert fmt(src, tmp_path / "dump", "--check") == 1 and capsys.readouterr().err == ""
    assert fmt(src, tmp_path / "dump", "--prepare") == 1
    assert "utt2spk" in capsys.readouterr().err


@pytest.mark.parametrize("part", [0, 3])
def test_part_out_of_range(tmp_path, capsys, part):
    src = write_data_dir(tmp_path / "data", "tr", 2, 0)
    assert fmt(src, tmp_path / "dump", "--prepare") == 0
    assert fmt(src, tmp_path / "dump", "--part", part, "--num_parts", 2) == 1
    assert f"--part {part} is not between 1 and --num_parts 2" in capsys.readouterr().err
