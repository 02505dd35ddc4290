"""The shape-bucket rule (design.buckets): few sizes, bounded padding."""

import numpy as np
import pytest

from bayesglmm.design import buckets


def test_bucket_sizes_and_padding_bound():
    B = buckets.ROW_FLOOR
    assert [buckets.bucket(n, B) for n in (1, 600, 842, 1024)] == [B] * 4
    assert [buckets.bucket(n, B) for n in (1025, 1280, 1281, 7584)] == [1280, 1280, 1536, 8192]
    assert buckets.bucket(100_000, B) == 102_400  # 5 significant bits above 65,536
    assert buckets.bucket(0, B) == 0  # no random effects: nothing to pad
    # fine buckets (problems that are not small): 5 significant bits, no floor
    assert [buckets.bucket(n, B, fine=True) for n in (20, 403, 584, 1100)] == [20, 416, 608,
                                                                               1152]
    n = np.arange(17, 2**19)
    b = np.array([buckets.bucket(i, 16) for i in n])
    sizes = np.unique(b)
    assert np.all(b >= n)
    # the padding overhead is bounded by the step: 25% up to 65,536, 6.25% above
    assert np.all(b <= n * np.where(n <= buckets.FINE_ABOVE, 1.25, 1.0625))
    fine = np.array([buckets.bucket(i, 16, fine=True) for i in n])
    assert np.all((fine >= n) & (fine <= n * 1.0625))
    # few buckets: 4 per octave up to 65,536, then 16
    assert len([s for s in sizes if 1024 < s <= 2048]) == 4
    assert len([s for s in sizes if 2**17 < s <= 2**18]) == 16


def test_disabled_buckets_leave_sizes_alone(monkeypatch):
    monkeypatch.setattr(buckets, "ENABLED", False)
    assert buckets.buckets(842, 15) == buckets.Buckets(842, 842, 15, 15)


def test_pad_fills_along_the_first_axis():
    x = np.arange(6.0).reshape(3, 2)
    out = buckets.pad(x, 5, -1)
    np.testing.assert_array_equal(out[:3], x)
    np.testing.assert_array_equal(out[3:], -1)
    assert buckets.pad(x, 3) is x
    with pytest.raises(ValueError):
        buckets.pad(x, 2)
