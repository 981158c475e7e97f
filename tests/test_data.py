"""Evaluation windows (the full split, its first windows, windows spread over it, windows clear of
calibration text), split files and calibration corpora."""
import pytest
import torch

from conftest import write_corpus
from pruner_zero.data import calibration_starts, eval_windows
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


def test_selection_windows_never_overlap_a_calibration_window():
    ids = torch.arange(10_000)  # token value = position: overlap is visible in the values
    seqlen = 37
    starts = calibration_starts(ids.numel(), 40, seqlen, seed=3)
    calib = set()
    for s in starts:
        calib.update(range(s, s + seqlen))
    windows = eval_windows(ids, seqlen, exclude=starts)
    everything = eval_windows(ids, seqlen)
    assert 0 < windows.shape[0] < everything.shape[0]
    assert not calib & set(windows.flatten().tolist())
    # every window that does not touch calibration text is kept
    untouched = [w for w in everything if not calib & set(w.tolist())]
    assert len(untouched) == windows.shape[0]
    spread = eval_windows(ids, seqlen, limit=10, spread=True, exclude=starts)
    assert spread.shape[0] == 10 and not calib & set(spread.flatten().tolist())


def test_confirmation_windows_are_not_fitness_windows():
    """A search's confirmation (skip_spread = the fitness budget) reads text its fitness never
    read, also where the budgets divide each other (64 of 128 would be every other one), and
    still not calibration text."""
    ids = torch.arange(40_000)
    seqlen = 16
    starts = calibration_starts(ids.numel(), 30, seqlen, seed=1)
    for fitness, confirm in ((128, 64), (12, 24), (100, 7)):
        fit = eval_windows(ids, seqlen, fitness, spread=True, exclude=starts)
        conf = eval_windows(ids, seqlen, confirm, spread=True, exclude=starts, skip_spread=fitness)
        assert conf.shape[0] == confirm
        assert not set(fit[:, 0].tolist()) & set(conf[:, 0].tolist()), (fitness, confirm)
        calib = {t for s in starts for t in range(s, s + seqlen)}
        assert not calib & set(conf.flatten().tolist())
    # fitness on every window: no other text exists, nothing is dropped
    assert torch.equal(eval_windows(ids, seqlen, skip_spread=10**9), eval_windows(ids, seqlen))


def test_window_budgets_are_read_alike_everywhere():
    from pruner_zero.data import spread_indices
    from pruner_zero.windows import window_budget, windows_note
    from pruner_zero.errors import ConfigError

    assert window_budget(None, "n") is None and window_budget(0, "n") is None
    assert window_budget(7, "n") == 7
    for bad in (-1, True, 2.5, "3"):
        with pytest.raises(ConfigError, match="n must be a positive number of windows"):
            window_budget(bad, "n")
    assert spread_indices(4, 10).tolist() == [0, 2, 5, 7]  # floor(i * 10 / 4)
    assert windows_note("test", 64, 64) == "64 windows spread evenly over test"
    assert windows_note("test", 64, 20) == "all 20 windows of test"
    assert windows_note("test", None, 1219) == "all 1219 windows of test"


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


# ------------------------------------------------------------- calibration corpora (C4 format)
class CharTokenizer:
    """One token per character (no special tokens): lengths are easy to reason about."""

    def __call__(self, text, return_tensors=None):
        class Out:
            input_ids = torch.tensor([[ord(c) for c in text]])
        return Out()


def wanda_c4_windows(docs, nsamples, seqlen, seed):
    """Wanda's get_c4 loop, written out independently: the module-level random stream, a random
    document redrawn until it is longer than seqlen, then a random window inside it."""
    import random

    random.seed(seed)
    out = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(docs) - 1)
            ids = [ord(c) for c in docs[i]]
            if len(ids) > seqlen:
                break
        j = random.randint(0, len(ids) - seqlen - 1)
        out.append(ids[j:j + seqlen])
    return out


@pytest.mark.parametrize("name", ["c4-sample.json.gz", "docs.jsonl"])
def test_corpus_windows_are_drawn_as_wanda_draws_them(tmp_path, name):
    from pruner_zero.data import document_windows, load_documents

    docs = ["short", "x" * 3, "abcdefghijklmnopqrstuvwxyz" * 3, "tiny", "0123456789" * 5, "no"]
    path = write_corpus(tmp_path / name, docs)
    assert load_documents(str(path)) == docs
    windows = document_windows(CharTokenizer(), docs, nsamples=6, seqlen=12, seed=3)
    assert windows.tolist() == wanda_c4_windows(docs, 6, 12, 3)
    assert not torch.equal(windows, document_windows(CharTokenizer(), docs, 6, 12, seed=4))


def test_a_corpus_without_a_long_enough_document_is_an_error_not_a_hang(tmp_path):
    from pruner_zero.data import document_windows

    with pytest.raises(DataError, match="no calibration document is longer than --seqlen 12"):
        document_windows(CharTokenizer(), ["abc", "defgh", "x" * 12], 4, 12, 0)


@pytest.mark.parametrize("content, message", [
    ('{"text": "a"}\nnot json\n', "line 2: not a JSON object"),
    ('{"text": 3}\n', 'line 1: no "text" string'),
    ("\n\n", "holds no documents"),
])
def test_a_damaged_corpus_file_is_one_error_naming_the_line(tmp_path, content, message):
    from pruner_zero.data import load_documents

    (tmp_path / "c.jsonl").write_text(content)
    with pytest.raises(DataError, match=message):
        load_documents(str(tmp_path / "c.jsonl"))
    with pytest.raises(DataError, match="no such file"):
        load_documents(str(tmp_path / "missing.jsonl"))


def test_text_join_wanda_puts_a_blank_line_between_hub_rows(monkeypatch):
    import datasets

    from pruner_zero.data import load_split_text

    rows = ["", " = Title = \n", "", " Body text .\n"]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: {"text": rows})
    assert load_split_text("test", None) == "".join(rows)
    assert load_split_text("test", None, "wanda") == "\n\n".join(rows)


def test_text_join_wanda_is_refused_for_local_files(tmp_path):
    from pruner_zero.data import load_split_text

    (tmp_path / "test.txt").write_text("a b c\n")
    with pytest.raises(DataError, match="read verbatim"):
        load_split_text("test", tmp_path, "wanda")
    with pytest.raises(DataError, match="--text-join must be one of concat, wanda"):
        load_split_text("test", None, "rows")
