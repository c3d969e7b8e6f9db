"""Hardware as a parameter, end to end: `make report HARDWARE=h200-sxm` runs the notebooks on
another GPU spec, and every bound and roofline number follows the spec while seed mode and the
data do not change."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stepdecomp.run import notebooks as runner
from stepdecomp.hw import specs
from stepdecomp.core.paths import FIXTURE_ROOT, NOTEBOOKS_DIR

pytestmark = pytest.mark.integration

NOTEBOOKS = [str(NOTEBOOKS_DIR / f"{n}.ipynb") for n in ("01_load", "02_decompose")]


@pytest.fixture(scope="module")
def components_by_gpu(tmp_path_factory) -> dict[str, pd.DataFrame]:
    out = {}
    for gpu in ("h100-sxm", "h200-sxm"):
        dst = tmp_path_factory.mktemp(gpu)
        assert runner.main([*NOTEBOOKS, "--data", str(FIXTURE_ROOT), "--out", str(dst),
                            "--hardware", gpu]) == 0
        out[gpu] = pd.read_parquet(dst / "tables" / "step_components.parquet")
    return out


def test_lower_bound_scales_with_hbm_bandwidth(components_by_gpu):
    h100, h200 = components_by_gpu["h100-sxm"], components_by_gpu["h200-sxm"]
    bw_ratio = specs.load_gpu_spec("h100-sxm").hbm_bytes_per_s / specs.load_gpu_spec("h200-sxm").hbm_bytes_per_s
    assert bw_ratio == pytest.approx(3.35 / 4.8, rel=1e-15)
    lb100, lb200 = h100["phys_lower_bound_us"].to_numpy(), h200["phys_lower_bound_us"].to_numpy()
    has_tokens = lb100 > 0
    assert has_tokens.sum() > 0
    np.testing.assert_allclose(lb200[has_tokens], lb100[has_tokens] * bw_ratio, rtol=1e-12)


def test_every_roofline_time_follows_the_gpu(components_by_gpu):
    h100, h200 = components_by_gpu["h100-sxm"], components_by_gpu["h200-sxm"]
    assert len(h100) == len(h200)
    # same peak FLOP/s, more bandwidth: no roofline time grows, and the memory-bound ones shrink
    for col in [c for c in h100 if c.startswith("phys_") and c.endswith("_us")]:
        a, b = h100[col].to_numpy(np.float64), h200[col].to_numpy(np.float64)
        ok = np.isfinite(a)
        assert (np.isfinite(b) == ok).all(), col
        assert (b[ok] <= a[ok] * (1 + 1e-12)).all(), col
    total100, total200 = h100["phys_total_us"].to_numpy(), h200["phys_total_us"].to_numpy()
    ok = np.isfinite(total100) & (total100 > 0)
    assert (total200[ok] < total100[ok]).mean() > 0.9


def test_seed_mode_and_targets_do_not_depend_on_the_gpu(components_by_gpu):
    h100, h200 = components_by_gpu["h100-sxm"], components_by_gpu["h200-sxm"]
    same = ["step.duration_us", "step_forward_us", "step_period_us", "prefill_gemm_us",
            "prefill_attn_us", "decode_gemm_us", "total_analytical_us"]
    pd.testing.assert_frame_equal(h100[same], h200[same])
