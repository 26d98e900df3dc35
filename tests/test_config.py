from __future__ import annotations

import pytest

from autoprune.config import load_config, parse_config
from autoprune.errors import AutopruneError

MINIMAL = {"study": {"max_accuracy_drop": 1.0}, "model": {"name": "small_cnn"}, "dataset": {"name": "digits"}}


def test_quickstart_parses_with_every_section():
    config = load_config("studies/quickstart.toml")
    assert config.name == "quickstart" and config.model == "small_cnn" and config.dataset == "digits"
    assert config.search.importances == ("l1", "fpgm", "bn_scale")
    assert config.max_accuracy_drop == 1.0 and config.objective == "flops"


def test_objectives_list_makes_a_multi_objective_study():
    config = parse_config({**MINIMAL, "study": {"max_accuracy_drop": 1.0, "objectives": ["accuracy", "latency"]}})
    assert config.objective == ("accuracy", "latency")


def test_defaults_fill_what_is_missing():
    config = parse_config(MINIMAL, name="mini")
    assert config.name == "mini" and config.trials == 50 and config.search.importances == ("l1",)
    assert str(config.out_dir) == "runs/mini"


@pytest.mark.parametrize(("raw", "fragment"), [
    ({**MINIMAL, "serch": {}}, "unknown section 'serch'; did you mean 'search'?"),
    ({**MINIMAL, "search": {"rate_mx": 0.5}}, "unknown key in [search] 'rate_mx'; did you mean 'rate_max'?"),
    ({**MINIMAL, "study": {"max_accuracy_drop": "1"}}, "study.max_accuracy_drop must be int or float, got str '1'"),
    ({**MINIMAL, "study": {"max_accuracy_drop": -1.0}}, "cannot be negative but got -1.0"),
    ({**MINIMAL, "study": {"max_accuracy_drop": 1.0, "objective": "flop"}}, "did you mean 'flops'?"),
    ({"model": {"name": "x"}, "dataset": {"name": "digits"}}, "needs study.max_accuracy_drop"),
    ({**MINIMAL, "search": {"rate_max": 1.0}}, "rate_max < 1"),
    ({**MINIMAL, "search": {"uniform_starts": [0.9]}}, "uniform_starts must lie in"),
    ({**MINIMAL, "study": {"max_accuracy_drop": 1.0, "trials": True}}, "study.trials must be int, got bool"),
    ({**MINIMAL, "model": {"name": "x", "params": {"num_classes": 3}}}, "cannot set num_classes: the dataset"),
    ({**MINIMAL, "study": {"max_accuracy_drop": 1.0, "objectives": ["accuracy"]}}, "two or three"),
    ({**MINIMAL, "study": {"max_accuracy_drop": 1.0, "objective": "flops", "objectives": ["accuracy", "flops"]}},
     "not both"),
])
def test_bad_study_files_are_one_clear_error(raw, fragment):
    with pytest.raises(AutopruneError) as err:
        parse_config(raw)
    assert fragment in str(err.value)


def test_missing_or_broken_files(tmp_path):
    with pytest.raises(AutopruneError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\n")
    with pytest.raises(AutopruneError, match="not valid TOML"):
        load_config(bad)
