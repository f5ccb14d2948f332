"""The command's analysis flags are derived from AnalysisConfig: one per field, none drifting."""

from __future__ import annotations

import dataclasses

import pytest

from napari_topolens import cli
from napari_topolens.errors import TopoLensError
from napari_topolens.topology.analysis import AnalysisConfig

REQUIRED = ["report", "--sample", "digits", "--out", "o"]


def _report_actions() -> dict[str, object]:
    report = cli.build_parser()._subparsers._group_actions[0].choices["report"]
    return {action.dest: action for action in report._actions}


def _a_value(spec: dataclasses.Field) -> tuple[str, object]:
    """A value other than the default for the field, as text and as the config holds it."""
    default = spec.default
    if spec.name == "metric":
        return "cosine", "cosine"
    choices = {
        "subsample": "maxmin",
        "mapper_lens": "pca1",
        "layer_distance": "bottleneck",
        "dendrogram_order": "rcm",
    }
    if spec.name in choices:
        return choices[spec.name], choices[spec.name]
    if spec.name == "mapper_eps":
        return "0.25", 0.25
    if spec.name == "mapper_perc_overlap":
        return "0.3", 0.3
    if spec.name in ("max_dim", "distance_dim"):
        return "0", 0
    if isinstance(default, float):
        return str(default + 0.5), default + 0.5
    assert isinstance(default, int), spec.name
    return str(default + 20), default + 20


def test_every_analysis_config_field_has_a_flag_with_its_default_and_help() -> None:
    actions = _report_actions()
    helps = cli.config_field_help()
    missing = []
    for spec in dataclasses.fields(AnalysisConfig):
        action = actions.get("seed" if spec.name == "seed" else f"config_{spec.name}")
        if action is None:
            missing.append(spec.name)
            continue
        assert helps.get(spec.name), f"{spec.name} has no description in the docstring"
        if spec.name != "seed":
            assert helps[spec.name] in action.help.replace("%%", "%")
            assert action.option_strings == list(cli.config_flags(spec.name))
    assert not missing, f"AnalysisConfig fields without a command-line flag: {missing}"


@pytest.mark.parametrize("spec", dataclasses.fields(AnalysisConfig), ids=lambda s: s.name)
def test_each_flag_reaches_the_config(spec: dataclasses.Field) -> None:
    text, value = _a_value(spec)
    flag = cli.config_flags(spec.name)[0]
    extra = ["--distance-dim", "0"] if spec.name == "max_dim" else []
    args = cli.build_parser().parse_args([*REQUIRED, flag, text, *extra])
    config = cli.config_from_args(args)
    assert getattr(config, spec.name) == value
    untouched = {f.name for f in dataclasses.fields(AnalysisConfig)} - {spec.name, "distance_dim"}
    for name in untouched:  # the other fields keep the class's defaults
        assert getattr(config, name) == getattr(AnalysisConfig(), name), name


def test_defaults_are_the_class_defaults_and_bad_values_are_one_message() -> None:
    args = cli.build_parser().parse_args(REQUIRED)
    assert cli.config_from_args(args) == AnalysisConfig()
    assert args.sampling == "top_norm"  # one default sampling: the widget's and run_variants'
    # H0 alone: the layers are compared on H0 without a second flag
    args = cli.build_parser().parse_args([*REQUIRED, "--max-dim", "0"])
    assert cli.config_from_args(args).distance_dim == 0
    args = cli.build_parser().parse_args([*REQUIRED, "--perc-overlap", "1.5"])
    with pytest.raises(TopoLensError, match="mapper_perc_overlap must lie strictly between"):
        cli.config_from_args(args)
    assert cli.main([*REQUIRED, "--n-cubes", "many"]) == 2  # argparse's own usage error
