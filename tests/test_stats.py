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
