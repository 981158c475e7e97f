"""Evaluation windows: the full split, its first windows, or windows spread over it."""
import pytest
import torch

from pruner_zero.data import eval_windows
from pruner_zero.errors import DataError


def test_windows_cover_the_split_in_order_and_drop_the_tail():
    ids = torch.arange(103)
    w = eval_windows(ids, 10)
    assert w.shape == (10, 10) and torch.equal(w.flatten(), ids[:100])


def test_first_windows_and_spread_windows():
    ids = torch.arange(1000)
    first = eval_windows(ids, 10, limit=4)
    spread = eval_windows(ids, 10, limit=4, spread=True)
    assert first[:, 0].tolist() == [0, 10, 20, 30]
    assert spread[:, 0].tolist() == [0, 250, 500, 750]  # every quarter of the split is sampled
    assert torch.equal(spread[1], ids[250:260])  # whole windows, not shifted ones
    # a limit at or above the number of windows is the whole split, spread or not
    assert torch.equal(eval_windows(ids, 10, limit=500, spread=True), eval_windows(ids, 10))


def test_a_split_shorter_than_one_window_is_a_data_error():
    with pytest.raises(DataError, match="fewer than --seqlen"):
        eval_windows(torch.arange(5), 10)


def test_a_split_that_is_not_utf8_names_the_file_and_the_byte(tmp_path):
    from pruner_zero.data import load_split_text

    (tmp_path / "train.txt").write_bytes("caf\u00e9 ".encode("utf-8") + b"\xff\xfe tail")
    with pytest.raises(DataError, match=r"train.txt is not UTF-8 text: byte 6"):
        load_split_text("train", tmp_path)


def test_nsamples_is_bounded_by_the_windows_the_split_has():
    from pruner_zero.data import calibration_starts

    assert len(calibration_starts(100, 90, 10, 0)) == 90
    with pytest.raises(DataError, match="--nsamples 100000000 is more than the 90 distinct windows"):
        calibration_starts(100, 100_000_000, 10, 0)
