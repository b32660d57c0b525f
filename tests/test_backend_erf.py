"""The numpy backend's float32 erf is a rational approximation: check its error against float64 erf
(math.erf, the C library's) over the whole float32 range that matters, and the float64 path exactly."""
import math

import numpy as np

from minigrad.backend import numpy_backend as nb


def _reference(x: np.ndarray) -> np.ndarray:
    return np.array([math.erf(v) for v in x.astype(np.float64)])


def test_float32_erf_within_7_ulp():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-6, 6, 200_000), np.logspace(-30, 0.8, 20_000),
                        -np.logspace(-30, 0.8, 20_000), [0.0, 4.0, -4.0, 1e30, -1e30]]).astype(np.float32)
    got = nb.erf(x).astype(np.float64)
    ref = _reference(x)
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - ref) / ulp) <= 7.5
    assert np.max(np.abs(got - ref)) < 5e-7
    assert got.dtype == np.float64 and nb.erf(x).dtype == np.float32


def test_float64_erf_is_exact():
    x = np.linspace(-5, 5, 1001)
    np.testing.assert_allclose(nb.erf(x), _reference(x), rtol=0, atol=1e-15)


def test_erf_keeps_shape_and_handles_noncontiguous():
    x = np.random.default_rng(1).standard_normal((3, 70_000)).astype(np.float32).T
    np.testing.assert_allclose(nb.erf(x), _reference(x.ravel()).reshape(x.shape), atol=5e-7)


def test_float32_normal_cdf_matches_float64_formula():
    x = np.random.default_rng(2).uniform(-9, 9, 100_000).astype(np.float32)
    ref = 0.5 * (1.0 + _reference(x / np.sqrt(np.float64(2.0))))
    got = nb.normal_cdf(x)
    assert got.dtype == np.float32
    assert np.max(np.abs(got.astype(np.float64) - ref)) < 5e-7
    np.testing.assert_allclose(nb.normal_cdf(x.astype(np.float64)), ref, rtol=0, atol=1e-15)


def test_x_normal_cdf_is_gelu():
    x = np.random.default_rng(3).uniform(-9, 9, 100_000).astype(np.float32)
    ref = x.astype(np.float64) * 0.5 * (1.0 + _reference(x / np.sqrt(np.float64(2.0))))
    got = nb.x_normal_cdf(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6)
