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


def test_exact_binomial_and_rate_ratio_intervals():
    from datarights.stats import clopper_pearson, rate_ratio

    lo, hi = clopper_pearson(5, 20)                       # the textbook value: [0.0866, 0.4910]
    assert lo == pytest.approx(0.0866, abs=1e-4) and hi == pytest.approx(0.4910, abs=1e-4)
    assert clopper_pearson(0, 23) == (0.0, pytest.approx(1 - 0.025 ** (1 / 23), abs=1e-9))
    assert clopper_pearson(23, 23) == (pytest.approx(0.025 ** (1 / 23), abs=1e-9), 1.0) and clopper_pearson(1, 0) is None
    lo, hi = rate_ratio(0, 23)                            # none of 23 trace hits survive: r <= 0.174
    assert lo == 0.0 and hi == pytest.approx(0.174, abs=1e-3)
    assert rate_ratio(0, 0) is None and rate_ratio(4, 0)[1] == float("inf")
    lo, hi = rate_ratio(20, 20)
    assert lo < 1 < hi


def test_a_ratio_resample_with_a_zero_denominator_is_left_out_without_a_warning():
    import warnings

    from datarights.stats import bootstrap, ratio_stat

    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([0.0, 0.0, 0.0, 2.0])     # most resamples that miss the last unit divide by zero
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lo, hi = bootstrap(ratio_stat(a, b), 4)
    assert np.isnan(ratio_stat(a, b)(np.array([0, 1])))
    assert 0.4 <= lo <= hi <= 10.0
