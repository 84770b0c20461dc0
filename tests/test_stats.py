"""Known answers for the statistics over seeds."""

import pytest

from digits_jax import stats


def test_summarize_known_answer():
  # mean 0.97, sample std 0.01; t(0.975, df=2) = 4.302652729911275.
  s = stats.summarize([0.96, 0.97, 0.98])
  assert s['n'] == 3 and s['min'] == 0.96 and s['max'] == 0.98
  assert s['mean'] == pytest.approx(0.97)
  assert s['std'] == pytest.approx(0.01)
  half = 4.302652729911275 * 0.01 / 3 ** 0.5
  assert s['ci95'] == pytest.approx([0.97 - half, 0.97 + half])


def test_summarize_one_seed_has_no_interval():
  assert stats.summarize([0.5]) == {'mean': 0.5, 'std': 0.0, 'n': 1, 'min': 0.5, 'max': 0.5,
                                    'ci95': None}


def test_summarize_equal_values_and_bad_input():
  assert stats.summarize([0.9, 0.9])['ci95'] == [0.9, 0.9]
  with pytest.raises(ValueError):
    stats.summarize([])


def test_welch_known_answer():
  # By hand: means 2.5 and 6, variances 5/3 and 10; se^2 = 5/12 + 2 = 29/12;
  # t = -3.5 / sqrt(29/12); Welch-Satterthwaite df = (29/12)^2 / ((5/12)^2/3 + 2^2/4).
  # R's t.test(c(1,2,3,4), c(2,4,6,8,10)): p-value 0.06913, 95% CI -7.385368 0.385368.
  w = stats.welch([1, 2, 3, 4], [2, 4, 6, 8, 10])
  assert w['difference'] == pytest.approx(-3.5)
  assert w['t'] == pytest.approx(-3.5 / (29 / 12) ** 0.5)
  assert w['df'] == pytest.approx((29 / 12) ** 2 / ((5 / 12) ** 2 / 3 + 1))
  assert w['p_value'] == pytest.approx(0.06913, abs=1e-5)
  assert w['ci95'] == pytest.approx([-7.385368, 0.385368], abs=1e-6)
  assert (w['n_a'], w['n_b']) == (4, 5)


def test_welch_undefined_without_spread_or_second_seed():
  for a, b in (([0.9], [0.8, 0.9]), ([0.9, 0.9], [0.8, 0.8])):
    w = stats.welch(a, b)
    assert w['difference'] == pytest.approx(sum(a) / len(a) - sum(b) / len(b))
    assert w['ci95'] is None and w['p_value'] is None
  with pytest.raises(ValueError):
    stats.welch([], [1.0])


def test_holm_known_answer():
  # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> kept at 0.06.
  assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert stats.holm([0.5, None, 0.4]) == [0.8, None, 0.8]  # m = 2; capped order kept.
  assert stats.holm([0.9, 0.8]) == [1.0, 1.0]
  assert stats.holm([]) == []


@pytest.mark.parametrize('ci,expected', [
    ([-0.3, 0.4], 'equivalent'), ([0.1, 0.3], 'equivalent'), ([0.2, 0.9], 'better'),
    ([-1.2, -0.1], 'worse'), ([-0.8, 0.7], 'inconclusive'), (None, 'inconclusive')])
def test_verdict(ci, expected):
  assert stats.verdict({'ci95': ci}, margin=0.5) == expected
