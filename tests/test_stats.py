import numpy as np
import pytest

from datarights.stats import bootstrap, mean_ci, meets, wilson


def test_wilson_known_values():
    lo, hi = wilson(0, 16)
    assert lo == 0 and hi == pytest.approx(0.1936, abs=1e-4)
    lo, hi = wilson(8, 16)
    assert (lo, hi) == (pytest.approx(0.2800, abs=1e-4), pytest.approx(0.7200, abs=1e-4))
    assert wilson(3, 0) is None


def test_bootstrap_and_bars():
    x = np.random.default_rng(0).normal(1.0, 1.0, 400)
    fig = mean_ci(x)
    lo, hi = fig["ci"]
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 / 20, rel=0.2)  # about ±1.96 σ/√n
    assert bootstrap(lambda j: x[j].mean(), 1) is None                               # one unit: no interval
    assert meets([0.91, 0.99], 0.9) and not meets([0.89, 0.99], 0.9) and not meets(None, 0.9)


def test_cluster_bootstrap_counts_a_repeated_unit_once():
    # three concepts, one of them queried 10 times: query-level resampling treats the 10 as independent
    x = np.array([0.0, 1.0] + [5.0] * 10)
    groups = ["a", "b"] + ["c"] * 10
    by_query = bootstrap(lambda j: x[j].mean(), len(x))
    by_concept = bootstrap(lambda j: x[j].mean(), len(x), groups=groups)
    assert by_concept[1] - by_concept[0] > 1.5 * (by_query[1] - by_query[0])
    assert mean_ci(x, groups=groups)["ci"] == list(by_concept)
    assert bootstrap(lambda j: x[j].mean(), len(x), groups=["c"] * 12) is None      # one concept: no interval
    with pytest.raises(ValueError, match="labels"):
        bootstrap(lambda j: x[j].mean(), len(x), groups=groups[:3])
    # distinct labels give back the plain query-level bootstrap's spread (different draws)
    plain = bootstrap(lambda j: x[j].mean(), len(x), groups=[str(i) for i in range(len(x))])
    assert plain[1] - plain[0] == pytest.approx(by_query[1] - by_query[0], rel=0.15)
