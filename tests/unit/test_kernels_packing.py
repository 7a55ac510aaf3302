"""Native first-fit-decreasing packing equals the reference and never overfills a bin."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexa_engines import kernels
from nexa_engines import kernels_reference as ref

pytestmark = pytest.mark.skipif(not kernels.NATIVE, reason="nexa_kernels is not built (make kernels)")


@settings(max_examples=80, deadline=None)
@given(capacity=st.integers(1, 64), data=st.data())
def test_packing_matches_the_reference_and_fits(capacity: int, data: st.DataObject) -> None:
    lengths = np.array(data.draw(st.lists(st.integers(0, capacity), max_size=60)), dtype=np.int64)
    packing = kernels.pack_sequences(lengths, capacity)
    bins, offsets, used = ref.first_fit_decreasing(lengths.tolist(), capacity)
    assert (packing.bins.tolist(), packing.offsets.tolist(), packing.num_bins) == (bins, offsets, used)
    fill = np.bincount(packing.bins, weights=lengths, minlength=packing.num_bins)
    assert (fill <= capacity).all()
    ids = kernels.position_ids(lengths, packing)
    want = ref.position_ids(lengths.tolist(), bins, offsets, used, capacity, -1)
    assert ids.tolist() == want
    assert int((ids >= 0).sum()) == int(lengths.sum())


def test_overlong_sequences_are_refused_with_their_index() -> None:
    with pytest.raises(ValueError, match="sequence 1 has length 9"):
        kernels.pack_sequences(np.array([3, 9]), 8)


def test_long_tailed_lengths_pack_tightly() -> None:
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.lognormal(5.0, 1.0, 20_000).astype(np.int64) + 1, 2048)
    packing = kernels.pack_sequences(lengths, 2048)
    assert packing.efficiency(lengths) > 0.97
    assert packing.num_bins >= int(np.ceil(lengths.sum() / 2048))
