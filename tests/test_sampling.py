"""The fields a task and a protocol share are declared and checked once (sampling.Sampling)."""
from dataclasses import fields

import pytest

from pruner_zero.errors import ConfigError
from pruner_zero.sampling import Sampling
from pruner_zero.tasks import Task
from pruner_zero.workbench import Protocol


def test_task_and_protocol_take_their_calibration_fields_from_sampling():
    shared = [f.name for f in fields(Sampling)]
    for cls in (Task, Protocol):
        names = [f.name for f in fields(cls)]
        assert names[:len(shared)] == shared
        assert {f.name: f.default for f in fields(cls)}.items() >= \
            {f.name: f.default for f in fields(Sampling)}.items()


@pytest.mark.parametrize("field, value, message", [
    ("seqlen", "256", "seqlen must be an integer, got '256'"),
    ("seed", True, "seed must be an integer, got True"),
    ("nsamples", 4.0, "nsamples must be an integer, got 4.0"),
    ("calib_split", 5, "calib_split must be a string, got 5"),
    ("calib_data", ["c4"], "calib_data must be a string, got ['c4']"),
])
def test_one_check_of_the_shared_fields_for_tasks_and_protocols(field, value, message):
    with pytest.raises(ConfigError, match="^task m: " + message.replace("[", r"\[")
                       .replace("]", r"\]") + "$"):
        Task("m", **{field: value})
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[").replace("]", r"\]")
                       + "$"):
        Protocol("m", **{field: value}).check_types()
    Task("m")  # the defaults pass
    Protocol("m").check_types()
