"""Run reports (tiler.reports): stages, counts and memory as measured outside tiler."""



import tiler
from tests.conftest import smooth_image


def test_report_has_stages_counts_and_memory(tmp_path, tif, tiny_model):
    report = tiler.run_scene(tif(smooth_image(3, 64, 64)), tmp_path / "m.tif", model=tiny_model)
    assert set(report.seconds) == {"read", "predict", "blend", "write", "total"}
    assert report.patches["predicted"] == report.grid["patch_rows"] * report.grid["patch_cols"]
    # The process's peak resident memory as the kernel counts it (oracle: /proc's VmHWM, in kB).
    with open("/proc/self/status") as f:
        hwm_mb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    assert hwm_mb * 0.9 <= report.peak_rss_mb <= hwm_mb * 1.1 + 1 and report.scene["width"] == 64
