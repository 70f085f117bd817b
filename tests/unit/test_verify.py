from __future__ import annotations

import numpy as np
import pytest

from hwkit.errors import VerificationError
from hwkit.verify import compare, compare_int, fail_if_bad, record


def test_identical_outputs_pass():
    ref = np.random.default_rng(0).normal(size=(8, 4))
    s = compare(ref, ref.copy())
    assert s["ok"] and s["max_abs_err"] == 0 and s["class_agreement"] == 1.0


def test_float_noise_within_tolerance_passes_and_real_error_fails():
    ref = np.random.default_rng(0).normal(size=(8, 4)) * 10
    assert compare(ref, ref + 1e-6)["ok"]
    bad = ref.copy()
    bad[3, 2] += 0.05
    s = compare(ref, bad)
    assert not s["ok"] and s["max_abs_err"] == pytest.approx(0.05)


def test_ties_do_not_count_as_class_disagreement():
    ref = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    out = np.array([[1.0, 1.0 + 1e-9, 0.0], [0.0, 2.0, 1.0]])
    s = compare(ref, out)
    assert s["ok"] and s["class_agreement"] == 1.0


def test_shape_mismatch_fails():
    s = compare(np.zeros((2, 3)), np.zeros((2, 4)))
    assert not s["ok"] and "shapes" in s["reason"]


def test_integer_domain_is_exact():
    a = np.arange(12).reshape(3, 4)
    assert compare_int(a, a.copy())["int_exact"]
    b = a.copy()
    b[1, 1] += 1
    assert compare_int(a, b) == {"int_exact": False, "int_mismatches": 1}


def test_failure_names_the_hand_off():
    rec = record("finn-hw", "finn-streamlined", 4, compare(np.zeros((4, 2)), np.ones((4, 2))))
    with pytest.raises(VerificationError, match="finn-streamlined -> finn-hw"):
        fail_if_bad(rec)
