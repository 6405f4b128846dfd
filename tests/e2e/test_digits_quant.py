"""The quantization example's job on digits, both frameworks: PTQ within 1 point of fp32, QAT within
0.5 point, the deployed int8 file at most 0.3x the fp32 file and as accurate as the simulation."""

from __future__ import annotations

import pytest

import quantize_digits
from frameworks import building


@pytest.fixture(scope="module", params=building("examples"))
def numbers(request, tmp_path_factory):
    return request.param, quantize_digits.run(request.param, tmp_path_factory.mktemp(request.param))


def test_ptq_within_one_point(numbers):
    framework, n = numbers
    assert n["accuracy fp32"] > 0.95
    assert n["accuracy ptq (simulated)"] >= n["accuracy fp32"] - 0.01, (framework, n)


def test_qat_within_half_a_point(numbers):
    framework, n = numbers
    assert n["accuracy qat (simulated)"] >= n["accuracy fp32"] - 0.005, (framework, n)


def test_deployed_int8_matches_the_simulation(numbers):
    framework, n = numbers
    for name in ("ptq", "qat"):
        # one test image of 450 may flip on an off-by-one rounding tie
        assert abs(n[f"accuracy {name} (onnxruntime int8)"] - n[f"accuracy {name} (simulated)"]) <= 1 / 450 + 1e-9
        assert n[f"max |ort - simulated| / step {name}"] <= 1.001


def test_int8_file_is_at_most_0_3x(numbers):
    framework, n = numbers
    assert n["size ratio ptq"] <= 0.3 and n["size ratio qat"] <= 0.3, (framework, n)
