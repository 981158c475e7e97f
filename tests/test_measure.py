"""measure.py: the workbenches of a grid of tasks (one model load, one bench per protocol)."""
import pytest

from pruner_zero.errors import ConfigError
from pruner_zero.tasks import Task


def test_tasks_of_one_model_at_other_seqlens_get_their_own_workbench(tiny_dir):
    from pruner_zero.measure import TaskBenches
    from pruner_zero.runtime import Runtime

    model, data = str(tiny_dir / "tiny-llama"), str(tiny_dir / "data")
    benches = TaskBenches(Runtime(device="cpu"), None, False, lambda m: None)
    short = benches.bench(Task(model=model, data_dir=data, seqlen=16, nsamples=2))
    default = benches.bench(Task(model=model, data_dir=data, nsamples=2))
    assert short.model is default.model  # one model load
    assert short.protocol.seqlen == 16 and default.protocol.seqlen == 64  # the model's limit
    assert short.calib.shape == (2, 16) and default.calib.shape == (2, 64)
    with pytest.raises(ConfigError, match="longer than the model allows"):
        benches.bench(Task(model=model, data_dir=data, seqlen=65, nsamples=2))
