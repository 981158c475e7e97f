"""Property-based hunts for tracebacks: whatever a user types or hands us, the CLI ends with a
result or with exactly one `error:` line and exit 2. Derandomised in CI (see conftest)."""
from __future__ import annotations

import json
import string

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, strategies as st  # noqa: E402

from pruner_zero.cli import main  # noqa: E402
from pruner_zero.metric import registry  # noqa: E402

TERMINALS = ["W", "G", "X"]
OPS = sorted(registry.OPS)


def assert_result_or_one_error(code: int, out: str, err: str) -> None:
    assert "Traceback" not in err
    if code == 0:
        return
    assert code == 2, (code, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:"), err
    assert sum(line.startswith("error:") for line in lines) == 1, err


# --------------------------------------------------------------------------- strategies

numbers = st.one_of(st.integers(-10**15, 10**15).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["1e400", "-0", ".5", "1e-3", "100", "1" * 40, "nan", "inf"]))


def formulas(max_leaves: int = 30):
    """Mostly well-formed formulas over the metric language, with the odd wrong arity,
    unknown name or number, so both sides of the parser are exercised."""
    leaf = st.one_of(st.sampled_from(TERMINALS), numbers, st.sampled_from(["Y", "w", "mul", "__"]))

    def node(children):
        return st.tuples(st.sampled_from(OPS + ["foo"]),
                         st.lists(children, min_size=0, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})")

    return st.recursive(leaf, node, max_leaves=max_leaves)


def mangled(text_strategy):
    """A formula with a random cut, insertion or deletion: unbalanced, truncated, noisy."""
    return st.tuples(text_strategy, st.integers(0, 400), st.text(max_size=5),
                     st.integers(0, 3)).map(
        lambda t: (t[0][:t[1]] + t[2] + t[0][t[1] + t[3]:]))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=False),
              st.text(max_size=8), st.sampled_from(TERMINALS + OPS)),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["data", "left", "right", "formula", "x"]), children,
                        max_size=4)),
    max_leaves=25)


# ----------------------------------------------------------------------------- properties

@given(formulas())
def test_show_on_generated_formulas(formula):
    code, out, err = _call(["show", formula])
    assert_result_or_one_error(code, out, err)
    if code == 0:
        assert out.startswith("formula: ")


@given(mangled(formulas(12)))
def test_show_on_mangled_formulas(formula):
    code, out, err = _call(["show", formula])
    assert_result_or_one_error(code, out, err)


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_show_on_random_text(text):
    code, out, err = _call(["show", text])
    assert_result_or_one_error(code, out, err)


@given(json_values)
def test_metric_files_with_random_json(tmp_path_factory, value):
    path = tmp_path_factory.mktemp("m") / "metric.json"
    path.write_text(json.dumps(value))
    code, out, err = _call(["show", str(path)])
    assert_result_or_one_error(code, out, err)


@given(st.binary(max_size=400))
def test_metric_files_with_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("m") / "metric.json"
    path.write_bytes(data)
    code, out, err = _call(["show", str(path)])
    assert_result_or_one_error(code, out, err)


option_text = st.one_of(
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=string.printable, max_size=12),
    st.sampled_from(["0", "-1", "1e9", "2:4", "4:2", "0:4", "2:4:8", "a:b", "0.5,0.6", "0.5,,",
                     "", " ", "nan", "auto", "cpu", "cuda:7", "float64", "layer", "row"]))

PRUNE_OPTIONS = ["--sparsity", "--structure", "--compare", "--nsamples", "--seqlen", "--seed",
                 "--batch-size", "--device", "--dtype", "--calib-split", "--eval-split", "--metric"]
SEARCH_OPTIONS = ["--sparsity", "--structure", "--population", "--generations", "--tournament",
                  "--cx-prob", "--mut-prob", "--elite", "--max-height", "--hof-size", "--polish",
                  "--fitness-windows", "--race-factor", "--race-chunk", "--seed-metrics",
                  "--final-top", "--reference", "--baselines", "--confirm-seeds", "--space",
                  "--nsamples", "--seqlen", "--fitness-split", "--report-split"]


@given(st.lists(st.tuples(st.sampled_from(PRUNE_OPTIONS), option_text), max_size=4))
def test_prune_options_are_checked_with_one_error(tmp_path_factory, options):
    root = tmp_path_factory.mktemp("p")
    argv = ["prune", "--model", str(root / "absent-model"), "--metric", "wanda", "--quiet",
            "--no-cache"]
    for flag, value in options:
        argv.append(f"{flag}={value}")
    code, out, err = _call(argv)
    assert code == 2  # at best the absent model stops it
    assert_result_or_one_error(code, out, err)


@given(st.lists(st.tuples(st.sampled_from(SEARCH_OPTIONS), option_text), max_size=4))
def test_search_options_are_checked_with_one_error(tmp_path_factory, options):
    root = tmp_path_factory.mktemp("s")
    argv = ["search", "--model", str(root / "absent-model"), "--out", str(root / "run"), "--quiet",
            "--no-cache"]
    for flag, value in options:
        argv.append(f"{flag}={value}")
    code, out, err = _call(argv)
    assert code == 2
    assert_result_or_one_error(code, out, err)
    assert not (root / "run").exists()  # a search that fails its checks leaves nothing


def _call(argv: list[str]) -> tuple[int, str, str]:
    """main() with stdout/stderr captured here (hypothesis reruns a test body many times, which
    a function-scoped capsys fixture does not support)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------- issue #22: tasks YAML and --calib-data files

TASK_KEYS_AND_OTHERS = ["model", "data_dir", "calib_split", "fitness_split", "report_split",
                        "nsamples", "seqlen", "seed", "sparsity", "structure", "calibration",
                        "calib_data", "text_join", "weight", "name", "colour", "Model", ""]
task_values = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["valid", "validation", "test", "./test", "train", "2:4", "0:4", "row",
                     "sequential", "dense", "concat", "docs", "c4", "1.0e+308", "1e-320", "-1",
                     "0.5", "absent-model", "../x", "", " "]),
    st.text(max_size=10), st.lists(st.integers(0, 3), max_size=2))


@st.composite
def task_files(draw):
    """YAML lists of task mappings with random keys and values; one mapping may be reused (a
    YAML alias), and the text may be cut or mangled."""
    import yaml

    tasks = draw(st.lists(st.dictionaries(st.sampled_from(TASK_KEYS_AND_OTHERS), task_values,
                                          max_size=6), min_size=0, max_size=4))
    if tasks and draw(st.booleans()):
        tasks.append(tasks[0])  # dumped as an anchor and an alias
    doc = draw(st.one_of(st.just(tasks), st.just({"tasks": tasks}), json_values))
    text = yaml.safe_dump(doc, allow_unicode=True)
    return draw(st.one_of(st.just(text), mangled(st.just(text))))


@given(task_files())
def test_search_with_random_tasks_files_is_a_result_or_one_error(tmp_path_factory, text):
    root = tmp_path_factory.mktemp("t")
    path = root / "tasks.yaml"
    path.write_text(text, encoding="utf-8")
    code, out, err = _call(["search", "--tasks", str(path), "--out", str(root / "run"), "--quiet",
                            "--no-cache", "--model", str(root / "absent-model")])
    assert code == 2  # the absent model, if nothing before it
    assert_result_or_one_error(code, out, err)
    assert not (root / "run").exists()


calib_lines = st.one_of(
    st.dictionaries(st.sampled_from(["text", "Text", "content", ""]),
                    st.one_of(st.text(max_size=60), st.integers(), st.none(), st.lists(st.text(max_size=5))),
                    max_size=3).map(json.dumps),
    json_values.map(json.dumps), st.text(max_size=40))


@given(st.one_of(st.lists(calib_lines, max_size=6).map(lambda ls: "\n".join(ls).encode()),
                 st.binary(max_size=300)),
       st.sampled_from([".jsonl", ".jsonl.gz"]))
def test_random_calibration_corpora_give_windows_or_one_data_error(tmp_path_factory, data, suffix):
    """A --calib-data file of random JSON lines or bytes (named .gz or not): windows, or a
    PrunerZeroError (one `error:` line in the CLI), never another exception."""
    from conftest import word_tokenizer

    from pruner_zero.data import document_windows, load_documents
    from pruner_zero.errors import PrunerZeroError

    path = tmp_path_factory.mktemp("c") / f"corpus{suffix}"
    path.write_bytes(data)
    try:
        docs = load_documents(str(path))
        windows = document_windows(word_tokenizer(), docs, 2, 4, 0)
    except PrunerZeroError:
        return
    assert tuple(windows.shape) == (2, 4)
