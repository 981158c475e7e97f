"""Every bad input gets one clear line and a non-zero exit; a good run saves a loadable model."""
import json
import subprocess
import sys

import pytest
import torch
from conftest import base_args, run_main

from pruner_zero.cli import main


def eval_base(tiny_dir, *extra):
    """eval's options: no calibration."""
    return ["--model", str(tiny_dir / "tiny-llama"), "--data-dir", str(tiny_dir / "data"),
            "--seqlen", "16", "--device", "cpu", "--quiet", *extra]


@pytest.mark.parametrize("extra,message", [
    (["--metric", "mul(W, "], "metric"),
    (["--metric", "foo(W)"], "unknown op 'foo'"),
    (["--metric", "mul(W)"], "mul"),
    (["--metric", "Y"], "Y"),
    (["--metric", "missing/metric.json"], "not found"),
    (["--metric", "wanda", "--sparsity", "1.5"], "between 0 and 1"),
    (["--metric", "wanda", "--sparsity", "0"], "between 0 and 1"),
    (["--metric", "wanda", "--structure", "4:4"], "0 < N < M"),
    (["--metric", "wanda", "--structure", "6:4"], "0 < N < M"),
    (["--metric", "div(W, sub(G, G))"], "NaN"),
    (["--metric", "sub(X, X)"], "constant"),
    (["--metric", "wanda", "--seqlen", "4096"], "longer than the model allows"),
    (["--metric", "wanda", "--calib-split", "extra"], "extra.txt"),
])
def test_bad_prune_input_is_one_line_and_exit_2(tiny_dir, capsys, extra, message):
    argv = ["prune", *base_args(tiny_dir)]
    # a later flag wins in argparse, so `extra` overrides the defaults above
    code, out, err = run_main(capsys, *argv, *extra)
    assert code == 2
    lines = [l for l in err.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_missing_model_path_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pruner_zero", "eval", "--model",
                           str(tmp_path / "no" / "such" / "model"), "--quiet"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: model path not found: {tmp_path / 'no' / 'such' / 'model'}"


@pytest.mark.parametrize("structure", ["unstructured", "2:4"])
def test_prune_saves_a_reloadable_model_with_the_requested_sparsity(tiny_dir, capsys, structure):
    from transformers import AutoModelForCausalLM

    from pruner_zero.model import prunable_linears

    out_dir, report = tiny_dir / "pruned", tiny_dir / "report.json"
    code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "pruner-zero",
                         "--structure", structure, "--save", str(out_dir), "--report", str(report))
    assert code == 0, err
    rep = json.loads(report.read_text())
    for key in ("ppl_dense", "ppl", "sparsity", "metric", "seconds", "protocol"):
        assert key in rep
    assert rep["metric"] == "mul(abs(mul(W, W)), mms(G))"
    assert rep["protocol"]["seqlen"] == 16 and rep["protocol"]["nsamples"] == 2
    assert rep["sparsity"] == pytest.approx(0.5)
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    for name, lin in prunable_linears(model).items():
        zero = lin.weight == 0
        assert zero.float().mean().item() == pytest.approx(0.5), name
        if structure == "2:4":
            assert (zero.view(zero.shape[0], -1, 4).sum(dim=2) == 2).all(), name
    assert model.lm_head.weight.ne(0).all() and model.model.embed_tokens.weight.ne(0).all()
    # eval of the saved model matches the report
    code, out, err = run_main(capsys, "eval", *base_args(tiny_dir)[:-2], "--model", str(out_dir))
    assert code == 0 and float(out.strip()) == pytest.approx(rep["ppl"], rel=1e-4)


def test_save_refuses_a_non_empty_directory(tiny_dir, capsys):
    (tiny_dir / "taken").mkdir()
    (tiny_dir / "taken" / "keep.txt").write_text("precious")
    code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "wanda",
                         "--save", str(tiny_dir / "taken"))
    assert code == 2 and "not empty" in err
    assert (tiny_dir / "taken" / "keep.txt").read_text() == "precious"


def pruned_report(capsys, tiny_dir, *options: str) -> tuple[str, str, dict]:
    """`prune` with --report: its standard output and error, and the report (the prune must
    succeed)."""
    report = tiny_dir / "prune-report.json"
    code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), *options,
                              "--report", str(report))
    assert code == 0, err
    return out, err, json.loads(report.read_text())


def test_sparsegpt_prunes_and_updates_weights(tiny_dir, capsys):
    _, _, rep = pruned_report(capsys, tiny_dir, "--metric", "sparsegpt", "--sparsity", "0.5")
    assert rep["sparsity"] == pytest.approx(0.5, abs=0.02) and rep["metric"] == "sparsegpt"
    # issue #22: the report records what SparseGPT did, not the options it cannot follow
    assert rep["structure"] == "unstructured 0.5 per block of 128 input columns (SparseGPT)"
    assert rep["protocol"]["calibration"] == "sequential"
    code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "sparsegpt",
                              "--compare", "layer")
    assert code == 2 and "--compare layer does not apply" in err and out == ""


def test_unusable_output_paths_fail_before_any_work(tiny_dir, capsys):
    (tiny_dir / "adir").mkdir()
    code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "wanda",
                         "--report", str(tiny_dir / "adir"))
    assert code == 2 and "is a directory" in err and "dense perplexity" not in err
    code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "wanda",
                         "--save", str(tiny_dir / "data" / "train.txt"))
    assert code == 2 and "is a file" in err
    argv = [a for a in base_args(tiny_dir) if a != "--no-cache"]
    code, out, err = run_main(capsys, "prune", *argv, "--metric", "wanda",
                         "--cache-dir", str(tiny_dir / "data" / "train.txt"))
    assert code == 2 and "--cache-dir" in err


def test_bad_metric_fails_before_the_dense_evaluation(tiny_dir, capsys):
    code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "sub(W, W)")
    assert code == 2 and "constant" in err and "dense perplexity" not in err


def test_corrupt_statistics_cache_is_recomputed(tiny_dir, capsys):
    cache = tiny_dir / "cache"
    argv = [a for a in base_args(tiny_dir) if a != "--no-cache"] + ["--cache-dir", str(cache)]
    code, first, err = run_main(capsys, "prune", *argv, "--metric", "wanda")
    assert code == 0, err
    (cached,) = cache.glob("stats-*.safetensors")
    cached.write_bytes(cached.read_bytes()[:100])
    code, second, err = run_main(capsys, "prune", *argv, "--metric", "wanda")
    assert code == 0 and "unreadable" in err
    assert json.loads(second)["ppl"] == json.loads(first)["ppl"]


def test_show_rejects_non_finite_constants_and_sparsegpt(capsys):
    code, out, err = run_main(capsys, "show", "mul(W, 1e400)")
    assert code == 2 and "finite" in err
    code, out, err = run_main(capsys, "show", "sparsegpt")
    assert code == 2 and "not a formula" in err


# ------------------------------------------------------------------ hardening (issue 12)

def _damage_copy(tiny_dir, name, damage):
    import shutil

    dst = tiny_dir / name
    shutil.copytree(tiny_dir / "tiny-llama", dst)
    damage(dst)
    return dst


def _truncate(d):
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


@pytest.mark.parametrize("damage, message", [
    (_truncate, "model.safetensors is damaged: truncated"),
    (lambda d: (d / "model.safetensors").write_bytes(b""), "shorter than a safetensors header"),
    (lambda d: (d / "model.safetensors").write_bytes(bytes(range(256)) * 20), "header claims"),
    (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json must be a JSON object"),
    (lambda d: (d / "config.json").write_text('{"model_type": '), "config.json is not valid JSON"),
    (lambda d: (d / "tokenizer.json").write_bytes(b"\xff\x00"), "tokenizer.json is not UTF-8"),
])
def test_damaged_model_files_are_named_in_one_line(tiny_dir, capsys, damage, message):
    model = _damage_copy(tiny_dir, "damaged", damage)
    code, out, err = run_main(capsys, "eval", *eval_base(tiny_dir), "--model", str(model))
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("error:") and message in line and str(model) in line, line


def test_a_split_that_is_not_utf8_is_one_line(tiny_dir, capsys):
    (tiny_dir / "data" / "latin1.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    code, out, err = run_main(capsys, "eval", *eval_base(tiny_dir), "--eval-split", "latin1")
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "not UTF-8" in err


@pytest.mark.parametrize("flag", ["--save", "--report", "--cache-dir"])
def test_output_paths_that_cannot_be_written_fail_before_any_work(tiny_dir, capsys, flag):
    blocked = tiny_dir / "data" / "train.txt" / "sub" / "out"  # under a regular file
    argv = [a for a in base_args(tiny_dir) if a != "--no-cache"] if flag == "--cache-dir" else base_args(tiny_dir)
    code, out, err = run_main(capsys, "prune", *argv, "--metric", "wanda", flag, str(blocked))
    assert code == 2 and flag in err and "cannot be written" in err
    assert "dense perplexity" not in err and "sparsity" not in err  # nothing was computed


@pytest.mark.parametrize("argv, message", [
    (["prune", "--model", "m", "--metric", "wanda", "--sparsity", "nan"], "--sparsity: expected a finite"),
    (["search", "--model", "m", "--out", "o", "--race-factor", "nan"], "--race-factor: expected a finite"),
    (["search", "--model", "m", "--out", "o", "--cx-prob", "inf"], "--cx-prob: expected a finite"),
    (["search", "--model", "m", "--out", "o", "--mut-prob=-inf"], "--mut-prob: expected a finite"),
])
def test_non_finite_float_options_are_one_error_line(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and err.startswith("error:") and message in err


KILL_DURING_SAVE = """
import os, signal, sys
import transformers
def die(*args, **kwargs):  # the weights are written, the tokenizer is not: SIGKILL now
    os.kill(os.getpid(), signal.SIGKILL)
transformers.PreTrainedTokenizerBase.save_pretrained = die
from pruner_zero.cli import main
main(sys.argv[1:])
"""


def test_sigkill_during_save_leaves_no_model_and_the_rerun_succeeds(tiny_dir):
    from transformers import AutoModelForCausalLM

    save = tiny_dir / "pruned"
    argv = ["prune", *base_args(tiny_dir), "--metric", "wanda", "--save", str(save)]
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, *argv], capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-1000:]
    assert not save.exists()  # nothing that from_pretrained would load as if complete
    assert [p.name for p in tiny_dir.glob(".pruned.*.partial")]  # the half-written one, hidden
    again = subprocess.run([sys.executable, "-m", "pruner_zero", *argv], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert {p.name for p in save.iterdir()} >= {"config.json", "model.safetensors",
                                                "pruning.json", "tokenizer.json"}
    assert not list(tiny_dir.glob(".pruned.*.partial"))  # the dead process's leftovers are gone
    how = json.loads((save / "pruning.json").read_text())
    assert how["metric"] == "wanda" or "W" in how["metric"]
    assert how["protocol"]["nsamples"] == 2 and "torch" in how["versions"]
    AutoModelForCausalLM.from_pretrained(save)


def test_a_half_written_model_directory_explains_itself(tiny_dir, capsys):
    import shutil

    old = tiny_dir / "old-save"
    shutil.copytree(tiny_dir / "tiny-llama", old)
    (old / "tokenizer.json").unlink()
    code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "wanda", "--save", str(old))
    assert code == 2 and "incomplete model" in err and "pruning.json" in err


def test_a_report_inside_the_saved_model_is_refused_before_any_work(tiny_dir, capsys):
    save = tiny_dir / "pruned"
    code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "wanda", "--save", str(save),
                         "--report", str(save / "report.json"))
    assert code == 2 and "is inside --save" in err and "dense perplexity" not in err
    assert not save.exists()


def test_prune_with_sequential_calibration_records_the_mode(tiny_dir, capsys):
    reports = {}
    for mode in ("dense", "sequential"):
        report = tiny_dir / f"{mode}.json"
        code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "wanda", "--sparsity",
                             "0.7", "--calibration", mode, "--report", str(report))
        assert code == 0, err
        reports[mode] = json.loads(report.read_text())
    assert reports["sequential"]["protocol"]["calibration"] == "sequential"
    assert reports["dense"]["protocol"]["calibration"] == "dense"
    assert reports["sequential"]["ppl"] != reports["dense"]["ppl"]
    assert reports["sequential"]["sparsity"] == reports["dense"]["sparsity"]


def test_a_sparsity_no_row_can_reach_is_warned_about(tiny_dir, capsys):
    code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "wanda", "--sparsity", "1e-300")
    assert code == 0 and "warning: 1e-300 was asked for and 0.0000 was achieved" in err


def test_version_is_printed(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("pruner-zero 0.")


def test_a_hub_id_without_network_fails_with_one_line_before_any_download(monkeypatch, capsys):
    import pruner_zero.model as model_mod

    monkeypatch.setattr(model_mod, "HUB_HOST", ("hub.invalid", 443))  # never resolvable
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    code, out, err = run_main(capsys, "eval", "--model", "no-such-org/no-such-model", "--device", "cpu",
                         "--quiet")
    assert code == 2 and err.count("\n") == 1
    assert "not in the local Hugging Face cache and the hub (hub.invalid) cannot be reached" in err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run_main(capsys, "eval", "--model", "no-such-org/no-such-model", "--device", "cpu")
    assert code == 2 and "HF_HUB_OFFLINE is set" in err


def test_eval_shows_no_calibration_options_and_prune_can_skip_the_dense_ppl(tiny_dir, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    shown = capsys.readouterr().out
    assert "--seqlen" in shown and not any(f in shown for f in ("--nsamples", "--calib-split",
                                                                "--cache-dir", "--seed"))
    code, out, err = run_main(capsys, "eval", *base_args(tiny_dir))  # base_args() has --nsamples and --no-cache
    assert code == 0 and "warning: eval calibrates nothing; --nsamples, --no-cache ignored" in err
    code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "wanda", "--no-dense-ppl")
    assert code == 0 and json.loads(out)["ppl_dense"] is None and "dense perplexity" not in err


def test_save_through_a_symbolic_link_is_refused_before_any_work(tiny_dir, capsys):
    (tiny_dir / "target").mkdir()
    (tiny_dir / "link").symlink_to(tiny_dir / "target")
    code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "wanda",
                         "--save", str(tiny_dir / "link"))
    assert code == 2 and "symbolic link" in err and "dense perplexity" not in err


TERM_DURING_SAVE = KILL_DURING_SAVE.replace("signal.SIGKILL", "signal.SIGTERM").replace(
    "main(sys.argv[1:])", "sys.exit(main(sys.argv[1:]))")


def test_sigterm_during_save_cleans_up_like_ctrl_c(tiny_dir):
    save = tiny_dir / "pruned"
    argv = ["prune", *base_args(tiny_dir), "--metric", "wanda", "--save", str(save)]
    term = subprocess.run([sys.executable, "-c", TERM_DURING_SAVE, *argv], capture_output=True,
                          text=True)
    assert term.returncode == 130 and "interrupted" in term.stderr, term.stderr[-1000:]
    assert not save.exists() and not list(tiny_dir.glob(".pruned.*"))


def test_prune_calibrates_on_a_c4_format_corpus_when_asked(tiny_dir, capsys):
    from conftest import TEXT, write_corpus

    sentences = [s.strip() + " ." for s in TEXT.split(" . ") if s.strip()]
    docs = [" ".join(sentences[i:i + 12]) for i in range(0, len(sentences), 12)]
    corpus = write_corpus(tiny_dir / "c4-sample.json.gz", docs)
    reports = {}
    for name, extra in (("split", []), ("corpus", ["--calib-data", str(corpus)])):
        report = tiny_dir / f"{name}.json"
        code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "wanda",
                             "--report", str(report), *extra)
        assert code == 0, err
        reports[name] = json.loads(report.read_text())
    assert reports["corpus"]["protocol"]["calib_data"] == str(corpus.resolve())
    assert reports["split"]["protocol"]["calib_data"] is None
    assert reports["corpus"]["ppl_dense"] == reports["split"]["ppl_dense"]  # same report text
    assert reports["corpus"]["ppl"] != reports["split"]["ppl"]  # other statistics, other masks
    code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "wanda",
                         "--calib-data", str(tiny_dir / "nothing.jsonl"))
    assert code == 2 and "no such file" in err and err.count("\n") == 1


def test_a_corpus_lets_the_calibration_split_name_be_the_report_split(tiny_dir, capsys):
    """With --calib-data, no split is read for calibration: the roles stay apart."""
    from conftest import write_corpus

    corpus = write_corpus(tiny_dir / "docs.jsonl", ["the quick brown fox jumps over the lazy dog ."
                                                    * 3] * 4)
    args = ["compare", "--model", str(tiny_dir / "tiny-llama"), "--data-dir", str(tiny_dir / "data"),
            "--nsamples", "2", "--seqlen", "16", "--device", "cpu", "--quiet", "--no-cache",
            "--metrics", "wanda", "--seeds", "1", "--calib-split", "test"]
    code, out, err = run_main(capsys, *args)
    assert code == 2 and "calibration split (test) must differ from the report split" in err
    code, out, err = run_main(capsys, *args, "--calib-data", str(corpus))
    assert code == 0, err
    assert "wanda" in out


def test_revision_and_trust_remote_code_reach_the_loaders(tiny_dir, capsys, monkeypatch):
    import transformers

    seen = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        original = cls.from_pretrained.__func__

        def spy(klass, source, *args, _original=original, **kwargs):
            seen.append((klass.__name__, kwargs.get("revision"), kwargs.get("trust_remote_code")))
            return _original(klass, source, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    code, out, err = run_main(capsys, "eval", *eval_base(tiny_dir, "--revision", "v1.0",
                                                     "--trust-remote-code"))
    assert code == 0, err
    assert seen == [("AutoTokenizer", "v1.0", True), ("AutoModelForCausalLM", "v1.0", True)]
    seen.clear()
    assert run_main(capsys, "eval", *eval_base(tiny_dir))[0] == 0
    assert seen == [("AutoTokenizer", None, False), ("AutoModelForCausalLM", None, False)]


def test_prune_reuses_a_cached_dense_perplexity(tiny_dir, capsys, monkeypatch):
    import pruner_zero.workbench as wb

    cache = tiny_dir / "cache"
    args = ["prune", *base_args(tiny_dir), "--cache-dir", str(cache), "--metric", "wanda"]
    args.remove("--no-cache")
    code, out, err = run_main(capsys, *args)
    first = json.loads(out)["ppl_dense"]
    assert code == 0 and "dense perplexity: from cache" not in err
    files = list(cache.glob("ppl-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["ppl"] == first
    measured = []
    original = wb.Workbench.perplexity
    monkeypatch.setattr(wb.Workbench, "perplexity",
                        lambda self, *a, **k: measured.append(1) or original(self, *a, **k))
    code, out, err = run_main(capsys, *args, "--metric", "magnitude")
    assert code == 0 and "dense perplexity: from cache" in err
    assert json.loads(out)["ppl_dense"] == first and len(measured) == 1  # the pruned model only
    code, out, err = run_main(capsys, *args, "--batch-size", "3")  # another measurement: measured again
    assert code == 0 and "from cache" not in err.replace("statistics: loaded from cache", "")
    files[0].write_text('{"key": "other", "ppl": 1.0}')
    code, out, err = run_main(capsys, *args)
    assert code == 0 and "is not the dense perplexity of this model" in err
    assert json.loads(out)["ppl_dense"] == first


def test_prune_holds_no_copy_of_the_dense_weights(tiny_dir, capsys, monkeypatch):
    """A prune that stays keeps nothing to restore, in either calibration mode: each layer is
    pruned in place, and no copy of the model (nor of what was zeroed) is held."""
    from pruner_zero.engine import Engine

    kept = []
    original = Engine.prune

    def spy(self, *a, **k):
        fp = original(self, *a, **k)
        kept.append((self.keep, len(self._undo)))
        return fp

    monkeypatch.setattr(Engine, "prune", spy)
    code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "wanda", "--sparsity", "0.7")
    assert code == 0 and kept == [(None, 0)]
    ppl = json.loads(out)["ppl"]
    kept.clear()
    code, out, err = run_main(capsys, "prune", *base_args(tiny_dir), "--metric", "wanda", "--sparsity", "0.7",
                         "--calibration", "sequential")
    assert code == 0 and kept == [(None, 0)] and json.loads(out)["ppl"] != ppl


def test_eval_windows_measures_that_many_spread_windows_and_the_report_says_so(tiny_dir, capsys):
    from pruner_zero.data import eval_windows, tokenize
    from pruner_zero.workbench import Protocol, Workbench

    out, err, result = pruned_report(capsys, tiny_dir, "--metric", "magnitude",
                                     "--eval-windows", "5")
    assert result["windows"] == 5 and result["protocol"]["eval_windows"] == 5
    assert result["windows_note"] == "5 windows spread evenly over test"
    assert "(on 5 windows spread evenly over test)" in err
    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               seqlen=16, device="cpu"), progress=False, log=lambda m: None)
    ids = tokenize(bench.tokenizer, (tiny_dir / "data" / "test.txt").read_text())
    every = eval_windows(ids, 16)
    chosen = every[torch.arange(5) * every.shape[0] // 5]  # window floor(i * W / N)
    assert result["ppl_dense"] == pytest.approx(bench.perplexity(chosen), rel=1e-6)
    code, out, err = run_main(capsys, "eval", *base_args(tiny_dir)[:4], "--seqlen", "16",
                              "--device", "cpu", "--quiet", "--eval-windows", "0")
    assert code == 0 and float(out) == pytest.approx(bench.perplexity(every), rel=1e-4)
    assert f"all {every.shape[0]} windows of test" in err
    with pytest.raises(SystemExit) as exit_:
        main(["eval", *base_args(tiny_dir)[:4], "--eval-windows", "-1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and "--eval-windows" in err


def test_a_closed_standard_output_is_an_error_not_a_lost_result():
    """Issue #22: with standard output closed, prune/search/show exited 0 and the result line
    was lost. Refused before any work, with one line on standard error."""
    import os

    proc = subprocess.run([sys.executable, "-m", "pruner_zero", "show", "wanda"],
                          stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1))
    assert proc.returncode == 2 and "standard output is closed" in proc.stderr
    ok = subprocess.run([sys.executable, "-m", "pruner_zero", "show", "wanda"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "X" in ok.stdout


def test_an_interrupt_offers_a_resume_only_for_a_run_that_can_resume(tmp_path, capsys):
    """Issue #22: SIGINT before the run folder existed printed a --resume hint that is refused."""
    import argparse

    from pruner_zero.cli import _dispatch

    def interrupted(a):
        raise KeyboardInterrupt

    args = argparse.Namespace(command="search", out=str(tmp_path / "run"), resume=None,
                              func=interrupted)
    assert _dispatch(args) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    assert _dispatch(args) == 130
    assert f"continue with: pruner-zero search --resume {tmp_path / 'run'}" in capsys.readouterr().err


def test_a_deleted_working_directory_is_one_clear_error(tmp_path):
    """Issue #22: `--version` in a deleted working directory died in a oneMKL fatal error (torch
    aborts when it loads there)."""
    script = (f"mkdir {tmp_path}/gone && cd {tmp_path}/gone && rmdir {tmp_path}/gone && "
              f"exec {sys.executable} -c 'from pruner_zero.cli import main; main()' --version")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 1 and "FATAL" not in proc.stderr + proc.stdout
    assert proc.stderr.strip() == ("error: the working directory no longer exists; cd to an "
                                   "existing directory and run again")
