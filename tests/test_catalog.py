"""Config checks against the registries (bench.catalog), in process: the CLI turns the same
ConfigError into one line and exit 2 (tests/cli/test_cli_errors.py runs that path)."""

from __future__ import annotations

import pytest

from bench.catalog import check_registered
from bench.config import ConfigError, parse_config


def _check(entry: dict) -> None:
    check_registered(parse_config({"benchmark": "t", "regularizers": ["erm", entry]}), "t.yaml")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"name": "erm+ema", "space": {"ema_decay": {"low": 0.5, "high": 1.5}}},
            r"t.yaml: search range of ema_decay: regularizer 'erm\+ema': ema_decay must lie in \[0, 1\], got 1.5",
        ),
        (
            {"name": "looksam", "space": {"period": {"low": 0, "high": 3}}},
            r"search range of period: regularizer 'looksam': period must be >= 1, got 0",
        ),
        (
            {"name": "sam", "space": {"perturbation_radius": {"low": -0.1, "high": 0.1}}},
            r"search range of perturbation_radius: .* must be >= 0, got -0.1",
        ),
        (
            {"name": "asam", "space": {"adaptive_tensors": {"choices": ["all", "some"]}}},
            r"search range of adaptive_tensors: .*'some'",
        ),
    ],
)
def test_a_search_range_past_the_valid_values_is_refused_before_the_run(entry, message):
    with pytest.raises(ConfigError, match=message):
        _check(entry)


def test_ranges_inside_the_valid_values_pass():
    _check({"name": "erm+ema", "space": {"ema_decay": {"low": 0.5, "high": 0.99}}})
    _check({"name": "looksam", "space": {"period": {"low": 1, "high": 3}}})
    _check({"name": "asam", "space": {"adaptive_tensors": {"choices": ["all", "weights"]}}})


def test_several_workers_refuse_saf_a_shared_gpu_and_a_batch_too_small_in_one_line():
    from bench.catalog import check_data_and_model
    from bench.data import DatasetError

    several = {"benchmark": "t", "resources": {"workers_per_trial": 2}}
    with pytest.raises(ConfigError, match=r"t.yaml: regularizer 'saf' cannot train on several workers") as refused:
        check_registered(parse_config({**several, "regularizers": ["erm", "saf"]}), "t.yaml")
    assert "\n" not in str(refused.value)
    check_registered(parse_config({**several, "regularizers": ["erm", "mesa", "esam"]}), "t.yaml")
    check_registered(parse_config({"benchmark": "t", "regularizers": ["saf"]}), "t.yaml")  # one worker: fine
    with pytest.raises(ConfigError, match="a trial's workers cannot share a GPU"):
        parse_config({**several, "resources": {"workers_per_trial": 2, "gpus_per_trial": 0.5}, "regularizers": ["erm"]})
    tiny = {"benchmark": "t", "regularizers": ["erm"], "training": {"batch_size": 4}}
    with pytest.raises(DatasetError, match="a batch of 4 samples cannot be shared by 8 workers"):
        check_data_and_model(parse_config({**tiny, "resources": {"workers_per_trial": 8}}))
    check_data_and_model(parse_config({**tiny, "resources": {"workers_per_trial": 4}}))
