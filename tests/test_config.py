"""Pipeline settings: default.yaml is complete and valid; bad files and overrides are refused by name."""

from __future__ import annotations

import pytest

from pruning.job.config import DEFAULT_CFG, KEYS, ConfigError, Settings, choices, load_config, parse_value


def test_defaults_load_and_overrides_are_typed():
    s = load_config()
    assert isinstance(s, Settings) and s.criterion == "detdshap" and s.scope == "all"
    s = load_config(None, ["criterion=hsic", "step_ratio=0.2", "resume=true", "imgsz=96"])
    assert (s.criterion, s.step_ratio, s.resume, s.imgsz) == ("hsic", 0.2, True, 96)
    assert parse_value("null") is None and parse_value("[1, 2]") == [1, 2]
    assert load_config({"criterion": "l1"}, {"imgsz": 64}).imgsz == 64  # a dict as cfg, a dict of overrides
    assert s.replace(imgsz=32).imgsz == 32 and s.imgsz == 96


def test_settings_fields_are_exactly_the_keys_of_default_yaml():
    import yaml

    assert set(yaml.safe_load(DEFAULT_CFG.read_text())) == set(KEYS)
    assert load_config() == Settings(**yaml.safe_load(DEFAULT_CFG.read_text()))


def test_choices_come_from_the_registries():
    from pruning.criteria import DetDSHAP
    from pruning.policy import SCOPES

    c = choices()
    assert set(c["criterion"]) >= {"detdshap", "hsic", "taylor", "l1", "l2", "random"}
    assert c["calib_target"] == tuple(DetDSHAP.TARGETS) and c["scope"] == SCOPES


class Reverse:
    """A criterion made up for the test: scores fall with the channel index (so the last channels go first),
    multiplied by `seed` + 1 so that the option's value shows in the scores."""

    name = "reverse"

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, graph, coupling):
        import torch

        return {g.name: (len(g) - torch.arange(len(g), dtype=torch.float32)) * (self.seed + 1)
                for g in coupling.groups.values()}


@pytest.fixture
def reverse_registered(monkeypatch):
    """`reverse` registered for one test only (a data-free criterion whose option `seed` comes from the setting)."""
    from pruning.criteria import registry

    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    built = []

    def build(calibration, seed=0):
        built.append(seed)
        return Reverse(seed)

    registry.register_criterion("reverse", build, needs_data=False, options={"seed": "seed"}, summary="test")
    return built


def test_a_criterion_registered_once_is_accepted_by_the_settings_the_cli_and_a_pruner(reverse_registered, tmp_path):
    import json

    import pruning
    from conftest import cached_trace
    from pruning.job.cli import main

    s = load_config(None, ["criterion=reverse", "compare_criteria=[reverse, l1]", "seed=2"])
    assert s.criterion == "reverse" and "reverse" in choices()["criterion"]
    g = cached_trace("yolov8n.yaml", 64)
    weights = pruning.save_checkpoint(g.model, tmp_path / "w.pt", half=False)
    out = tmp_path / "scores.json"
    assert main(["score", "--pretrained", str(weights), "--out", str(out), "criterion=reverse", "seed=2",
                 "imgsz=64", f"project={tmp_path / 'runs'}"]) == 0
    expected = Reverse(2)(g, pruning.analyze(g))
    assert json.loads(out.read_text()) == {k: v.tolist() for k, v in expected.items()}
    assert not (tmp_path / "datasets").exists()  # a data-free criterion writes no dataset
    plan = pruning.CriterionPruner("reverse", options={"seed": 5}).graph_and_plan(g, ratio=0.25)[1]
    assert reverse_registered == [2, 5] and plan.settings["criterion"] == "reverse"
    assert plan.num_removed > 0
    for name, removed in plan.remove.items():  # in each group the highest channel indices (lowest scores) went
        n = plan.sizes[name]
        assert tuple(sorted(removed)) == tuple(range(n - len(removed), n)), name


def test_an_unregistered_criterion_is_refused_by_the_settings_and_the_pruner():
    import pruning

    with pytest.raises(ConfigError, match="criterion='reverse' is not one of"):
        load_config(None, ["criterion=reverse"])
    with pytest.raises(pruning.PlanError, match="unknown criterion 'reverse'"):
        pruning.CriterionPruner("reverse")


def test_plan_with_an_unknown_criterion_lists_every_criterion_and_which_need_data():
    """Issue 30 item 4: the message names all registered criteria, data-driven ones included."""
    import pruning
    from conftest import cached_trace

    g = cached_trace("yolov8n.yaml", 64)
    with pytest.raises(pruning.PlanError, match=r"unknown criterion 'bogus'; known criteria: l1, l2, random "
                                                r"\(data-free\); detdshap, hsic, taylor \(need calibration data\)"):
        pruning.plan(g, ratio=0.3, criterion="bogus")
    with pytest.raises(pruning.PlanError, match="unknown criterion 'bogus'"):  # before tracing the (missing) file
        pruning.plan_for_target("/nonexistent/best.pt", 0.4, criterion="bogus")
    with pytest.raises(pruning.PlanError, match=r"criterion 'taylor' needs calibration data.*"
                                                r"pruning.CriterionPruner\('taylor', data="):
        pruning.plan(g, ratio=0.3, criterion="taylor")


def test_detdshap_batching_settings_reach_the_criterion():
    """calib_batch / calib_chunk configure DetDSHAP's batched scoring (issue 12); the calibration is not read."""
    from pruning.criteria import build_criterion

    def unread():
        raise AssertionError("building the criterion must not read the calibration images")

    built = build_criterion("detdshap", load_config(None, ["calib_batch=3", "calib_chunk=2"]), lambda: None)
    assert (built.batch, built.chunk) == (3, 2)
    default = build_criterion("detdshap", load_config(), lambda: None)
    assert (default.batch, default.chunk) == (8, 1)
    assert build_criterion("l1", load_config(), unread) is not None


def test_export_onnx_without_onnx_is_refused_before_anything(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    with pytest.raises(ConfigError, match=r"export=onnx needs the onnx package.*pip install 'onnx"):
        load_config(None, ["export=onnx"])
    assert load_config(None, ["export=none"]).export == "none"


def test_every_default_key_is_documented_with_a_comment():
    for line in DEFAULT_CFG.read_text().splitlines():
        if line and not line.startswith("#") and ":" in line:
            assert "#" in line, f"undocumented setting: {line}"


@pytest.mark.parametrize(
    "override, message",
    [
        ("criterion=magic", "criterion='magic' is not one of"),
        ("step_ratio=1.5", r"step_ratio=1.5 must be a number in \[0, 1\)"),
        ("colour=red", "unknown setting 'colour'"),
        ("imgsz=-3", "imgsz=-3 must be a non-negative integer"),
        ("pretrained=/nonexistent/w.pt", "no such weights file"),
        ("nokeyvalue", "is not key=value"),
        ("compare_targets=[0.4,1.2]", r"compare_targets=\[0.4, 1.2\] must be a non-empty list of fractions"),
        ("compare_targets=[]", "compare_targets=.* must be a non-empty list"),
        ("prune_threshold=abc", "prune_threshold='abc' must be null or a finite number"),
        ("compare_metric=energy", "compare_metric='energy' is not one of"),
        ("latency_runtime=tensorrt", "latency_runtime='tensorrt' is not one of onnxruntime, torch"),
        ("latency_imgsz=0", "latency_imgsz must be positive"),
        ("latency_repeats=0", "latency_repeats must be positive"),
        ("iou=1.5", r"iou=1.5 must be a number in \(0, 1\]"),
        ("resume=maybe", "resume='maybe' must be true or false"),
        ("calib_batch=0", "calib_batch must be positive"),
        ("calib_chunk=1.5", "calib_chunk=1.5 must be a non-negative integer"),
    ],
)
def test_bad_overrides_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_malformed_and_unknown_files_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("criterion: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    extra = tmp_path / "extra.yaml"
    extra.write_text("criterion: l1\nlearning_speed: 3\n")
    with pytest.raises(ConfigError, match="extra.yaml: unknown setting 'learning_speed'"):
        load_config(extra)
    with pytest.raises(ConfigError, match="no such settings file"):
        load_config(tmp_path / "missing.yaml")
