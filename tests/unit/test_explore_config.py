"""The explore config schema, the Pareto front and the --best rule (no optuna, no training)."""

from __future__ import annotations

import pytest

from hwkit.explore.config import ExploreConfigError, hidden_widths, load_config, parse_config, weight_kbit
from hwkit.explore.front import dominates, pareto_front, pick_best

BASE = {"target": "zcu104", "objectives": ["accuracy", "LUT"], "space": {"bits": [2, 3], "depth": [2, 4]}}


def cfg(**over):
    doc = {**BASE, **over}
    return parse_config(doc, "x.toml")


def test_defaults_and_fields():
    c = cfg(trials=5, constraints={"fits": True, "accuracy_min": 0.9, "LUT_max": 5000},
            space={"bits": [2, 3], "depth": 3, "target_fps": [1e4, 1e5], "clock_ns": 5})
    assert c.trials == 5 and c.hardware == "finn-estimate" and c.study.sampler == "nsga2"
    assert c.space.bits == (2, 3) and c.space.depth == (3,) and c.space.clock_ns == (5.0,)
    assert c.directions() == ["maximize", "minimize"]
    assert c.constraints.max == (("LUT", 5000.0),)
    assert c.study_name() == "x"
    # the fingerprint follows the search space and settings, not the study name
    doc = {**BASE, "trials": 5, "constraints": {"fits": True, "accuracy_min": 0.9, "LUT_max": 5000},
           "space": {"bits": [2, 3], "depth": 3, "target_fps": [1e4, 1e5], "clock_ns": 5}}
    assert c.fingerprint() == parse_config({**doc, "study": {"name": "other"}}, "x.toml").fingerprint()
    assert c.fingerprint() != parse_config({**doc, "space": {"bits": [2], "depth": 3}}, "x.toml").fingerprint()


@pytest.mark.parametrize("over,field,words", [
    ({"space": {"bits": [2, 9]}}, "space.bits", "1..8"),
    ({"space": {"bits": []}}, "space.bits", "at least one"),
    ({"space": {"depth": [5]}}, "space.depth", "1..4"),
    ({"space": {"bits": [2, 2]}}, "space.bits", "twice"),
    ({"space": {"layer_bits": [[2, 3], [2]]}}, "space.layer_bits", "space.per_layer_bits = true"),
    ({"space": {"per_layer_bits": "yes"}}, "space.per_layer_bits", "true or false"),
    ({"space": {"amp_de": [-0.1]}}, "space.amp_de", "must be"),
    ({"space": {"shiftadd_mode": ["ps"]}}, "space.shiftadd_mode", 'use space.shiftadd = ["none", "shift"]'),
    ({"space": {"shiftadd": True}}, "space.shiftadd", "must be one of none, shift"),
    ({"space": {"shiftadd": ["none", "bcq"]}}, "space.shiftadd", "re-parameterises float models"),
    ({"space": {"bits": [1, 2], "shiftadd": ["shift"]}}, "space.shiftadd", "at least 2 bits"),
    ({"space": {"widths": [1]}}, "space.widths", "unknown field"),
    ({"objectives": ["accuracy", "LUTS"]}, "objectives", "unknown metric 'LUTS'"),
    ({"objectives": ["LUT", "DSP"]}, "objectives", "needs 'accuracy'"),
    ({"hardware": "none"}, "objectives", "needs a compile"),
    ({"hardware": "fast"}, "hardware", "must be one of"),
    ({"constraints": {"accuracy_min": 1.5}}, "constraints.accuracy_min", "<= 1"),
    ({"constraints": {"fits": "yes"}}, "constraints.fits", "true or false"),
    ({"constraints": {"accuracy_max": 0.9}}, "constraints.accuracy_max", "unknown field"),
    ({"pruning": {"margin": 0.1}}, "pruning", "accuracy_min"),
    ({"study": {"grace_s": 5, "heartbeat_s": 10}}, "study.grace_s", "longer than"),
    ({"study": {"sampler": "cmaes"}}, "study.sampler", "must be one of"),
    ({"trials": 0}, "trials", ">= 1"),
    ({"target": ""}, "target", "required"),
    ({"model": "resnet"}, "model", "only 'cqmlp'"),
    ({"shiftadd_mode": "x"}, "shiftadd_mode", "use space.shiftadd"),
])
def test_bad_fields_are_named(over, field, words):
    with pytest.raises(ExploreConfigError) as exc:
        cfg(**over)
    msg = str(exc.value)
    assert msg.startswith(f"x.toml: {field}: ") and words in msg and "\n" not in msg


def test_per_layer_bits_is_a_flag_in_the_space_and_the_fingerprint():
    plain = cfg()
    mixed = cfg(space={**BASE["space"], "per_layer_bits": True})
    assert plain.space.per_layer_bits is False and mixed.space.per_layer_bits is True
    assert plain.fingerprint() != mixed.fingerprint()


def test_shiftadd_modes_and_op_energy_metric():
    c = cfg(hardware="none", objectives=["accuracy", "op_energy_pj"],
            space={"bits": [3, 4], "shiftadd": ["none", "shift"]})
    assert c.space.shiftadd == ("none", "shift") and c.directions() == ["maximize", "minimize"]


def test_weight_kbit_per_layer():
    # 40-8-4 hidden, head 4: weights 320, 32, 16
    assert weight_kbit((8, 4), 2) == pytest.approx((320 + 32 + 16) * 2 / 1000)
    assert weight_kbit((8, 4), (4, 2, 8)) == pytest.approx((320 * 4 + 32 * 2 + 16 * 8) / 1000)
    with pytest.raises(ValueError, match="3 layers but 2 bit widths"):
        weight_kbit((8, 4), (4, 2))


def test_hardware_none_takes_analytical_cost_only():
    c = cfg(hardware="none", objectives=["accuracy", "weight_kbit"])
    assert c.hardware == "none"
    with pytest.raises(ExploreConfigError, match="space.target_fps: only means something"):
        cfg(hardware="none", objectives=["accuracy", "weight_kbit"], space={"target_fps": [1000]})


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ExploreConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("target = \n")
    with pytest.raises(ExploreConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)


def test_example_config_is_valid():
    from pathlib import Path

    c = load_config(Path(__file__).resolve().parents[2] / "examples" / "explore-cqmlp.toml")
    assert "accuracy" in c.objectives and c.space.bits == (2, 3, 4)


def test_widths_and_weight_memory():
    assert hidden_widths(4, 1.0) == (256, 128, 64, 32)
    assert hidden_widths(2, 0.5) == (128, 64)
    assert hidden_widths(4, 0.1) == (24, 12, 8, 4)
    # 40*256 + 256*128 + 128*64 + 64*32 + 32*4 = 53,376 weights (53,860 with biases, docs/cqmlp.md) at 2 bits
    assert weight_kbit((256, 128, 64, 32), 2) == pytest.approx(106.752)


def _row(n, acc, lut, state="COMPLETE", feasible=True):
    return {"number": n, "state": state, "feasible": feasible, "params": {}, "metrics": {"accuracy": acc, "LUT": lut}}


def test_front_and_best_rule():
    assert dominates((1, 1), (1, 2)) and not dominates((1, 2), (2, 1)) and not dominates((1, 1), (1, 1))
    rows = [_row(0, 0.90, 1000), _row(1, 0.95, 3000), _row(2, 0.93, 3000),  # 2 is dominated by 1
            _row(3, 0.99, 500, feasible=False),                             # infeasible: never on the front
            _row(4, 0.97, 9000), _row(5, 0.80, 900), _row(6, 0.99, 100, state="PRUNED"),
            _row(7, 0.97, 9000)]                                            # equal to 4: both kept
    assert pareto_front(rows, ["accuracy", "LUT"]) == [0, 1, 4, 5, 7]
    best = pick_best(rows, ["accuracy", "LUT"])
    assert best is not None and best["number"] == 4  # most accurate on the front; tie with 7 -> lower number
    rows.append(_row(8, 0.97, 8000))
    assert pick_best(rows, ["accuracy", "LUT"])["number"] == 8  # tie on accuracy -> fewer LUTs
    assert pick_best([_row(0, 0.9, 1, feasible=False)], ["accuracy", "LUT"]) is None
