"""The blend benchmark (tiler.bench, tiler bench): the streamed blend it times gives the closed-form result, as
its plain-NumPy baseline does."""

import pytest

from tiler.bench import blend_benchmark, format_table, numpy_baseline


@pytest.mark.parametrize("tta", ["none", "d4"])
def test_the_timed_blend_and_its_numpy_baseline_both_give_the_closed_form_result(tta):
    streamed = blend_benchmark(256, classes=2, tta=tta, patch_size=64, overlap=0.5)
    baseline = numpy_baseline(256, classes=2, tta=tta, patch_size=64, overlap=0.5)
    assert streamed.max_abs_error <= 1e-5 and baseline.max_abs_error <= 1e-5
    assert streamed.mpx_per_s > 0 and streamed.peak_mb > 0
    assert "256" in format_table([streamed, baseline])
