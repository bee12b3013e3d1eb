"""Option values (tiler.config): round trips, validation, the command line's choices and defaults from the
config fields."""

import json

import pytest

from tiler.cli import main
from tiler.config import InferenceConfig, OutputConfig, StreamConfig, VectorConfig
from tiler.errors import UsageError


def test_config_values_round_trip_and_are_validated():
    cfgs = [InferenceConfig(overlap=0.25, tta="d4", input_scale=["0.0625"], bands=[3, 2, 1]),
            StreamConfig(strip_rows=64), OutputConfig(kind="probability", creation_options=["COMPRESS=ZSTD"]),
            VectorConfig(classes="building,water", connectivity=8, min_area=12.5)]
    for c in cfgs:
        doc = json.loads(json.dumps(c.to_dict()))
        assert type(c).from_dict(doc) == c and hash(type(c).from_dict(doc)) == hash(c)
    with pytest.raises(UsageError, match="overlap must be a fraction"):
        InferenceConfig(overlap=1.0)
    with pytest.raises(UsageError, match="unknown InferenceConfig option"):
        InferenceConfig.from_dict({"overlapp": 0.5})
    with pytest.raises(UsageError, match="connectivity must be one of 4, 8"):
        VectorConfig(connectivity=6)
    with pytest.raises(UsageError, match="probability dtype"):
        OutputConfig(probability_dtype="float16")


def test_choice_options_come_from_the_registries_and_defaults_from_the_config_fields(monkeypatch):
    """Options declared once (issue 24): each choice-valued option of `tiler run` offers exactly its config
    field's registry, defaults to the field's default, and a value added to a registry is offered at once."""
    import dataclasses
    import types

    import click

    import tiler.blend
    import tiler.config as cfg

    run = main.get_command(click.Context(main), "run")
    options = {p.name: p for p in run.params}
    option_of = {("OutputConfig", "kind"): "output"}
    for (config, field), (module, attribute) in cfg._REGISTRIES.items():
        name = option_of.get((config, field), field)
        if name not in options:  # --connectivity is tiler run's too; every key must be some command's option
            assert config == "VectorConfig", (config, field)
            continue
        registry = getattr(__import__(module, fromlist=[attribute]), attribute)
        assert list(options[name].type.choices) == [str(k) for k in registry], name
        default = {f.name: f.default for f in dataclasses.fields(getattr(cfg, config))}[field]
        assert options[name].default == default, name
    monkeypatch.setattr(tiler.blend, "WINDOWS", types.MappingProxyType({**tiler.blend.WINDOWS, "tukey": None}))
    assert "tukey" in options["window"].type.choices
