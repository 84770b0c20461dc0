"""The sweep's comparisons against the reference cell, and the sentences they allow."""

import pytest
from scipy import stats as sps

from digits_jax import significance

REF = [0.970, 0.972, 0.971, 0.969, 0.973]


def cells():
  return [
      {'dataset': 'mnist', 'variant': 'default', 'values': REF},
      {'dataset': 'mnist', 'variant': 'v4', 'values': [0.976, 0.977, 0.975, 0.978, 0.976]},
      {'dataset': 'mnist', 'variant': 'v7', 'values': [0.972, 0.968, 0.973, 0.970, 0.971]},
      {'dataset': 'mnist', 'variant': 'v3', 'values': [0.960, 0.962, 0.961, 0.963, 0.959]},
      {'dataset': 'fashion_mnist', 'variant': 'default', 'values': [0.87]},
      {'dataset': 'fashion_mnist', 'variant': 'v4', 'values': [0.88]},
  ]


def test_compare_rows_are_welch_and_holm_per_dataset():
  rows = significance.compare(cells(), 'default')
  assert [(r['dataset'], r['variant']) for r in rows] == [
      ('mnist', 'v4'), ('mnist', 'v7'), ('mnist', 'v3'), ('fashion_mnist', 'v4')]
  mnist = rows[:3]
  raw = [sps.ttest_ind(c['values'], REF, equal_var=False).pvalue for c in cells()[1:4]]
  for row, cell, p in zip(mnist, cells()[1:4], raw):
    assert row['difference'] == pytest.approx(sum(cell['values']) / 5 - sum(REF) / 5)
    assert row['p_value'] == pytest.approx(p)
    assert row['ci95_low'] < row['difference'] < row['ci95_high']
    assert (row['n'], row['n_reference']) == (5, 5)
  # Holm over the three MNIST tests: smallest p times 3, next times 2, largest times 1,
  # kept non-decreasing (v3 and v4 are the clear ones, v7 is noise).
  order = sorted(range(3), key=lambda i: raw[i])
  expect = [None] * 3
  running = 0
  for rank, i in enumerate(order):
    running = max(running, min(1, (3 - rank) * raw[i]))
    expect[i] = running
  assert [r['p_holm'] for r in mnist] == pytest.approx(expect)
  assert [r['significant'] for r in mnist] == [True, False, True]
  fashion = rows[3]
  assert fashion['p_value'] is None and fashion['p_holm'] is None
  assert not fashion['significant'] and fashion['ci95_low'] is None
  assert tuple(rows[0]) == significance.FIELDS


def test_conclusions_state_only_what_holds():
  rows = significance.compare(cells(), 'default')
  text = significance.conclusions(rows, cells(), 'the default',
                                  {'mnist': 'MNIST', 'fashion_mnist': 'Fashion-MNIST'})
  v4 = rows[0]
  assert v4['p_holm'] < 0.001
  assert text[0] == (f'v4 is better than the default on MNIST: +0.54 pt '
                     f'[{100 * v4["ci95_low"]:+.2f}, {100 * v4["ci95_high"]:+.2f}], '
                     'p<0.001 (Holm-adjusted).')
  assert text[1].startswith('v3 is worse than the default on MNIST: -1.00 pt [')
  assert text[2] == ('v7: no significant difference from the default on MNIST at n=5 '
                     '(Holm-adjusted p >= 0.05; intervals in the table).')
  assert text[3].startswith('Highest mean on MNIST: v4, 97.64% [')
  assert 'its lead over the runner-up default (+0.54 pt [' in text[3]
  assert text[3].endswith('unadjusted) holds.')
  assert text[4].startswith('Fashion-MNIST: one seed per cell, so no interval and no test')
  assert text[5] == ('Highest mean on Fashion-MNIST: v4, 88.00% (n=1); its lead over '
                     'default (+1.00 pt (no interval)) is untested.')
  assert len(text) == 6


def test_an_interval_that_excludes_zero_without_surviving_holm_is_explained():
  """v5's own 95% interval excludes 0 (raw p=0.02) but Holm over three tests (p*3=0.06)
  does not find it: the conclusions say why the table's interval is no finding."""
  data = [{'dataset': 'mnist', 'variant': 'default', 'values': REF},
          {'dataset': 'mnist', 'variant': 'v5', 'values': [0.974, 0.974, 0.973, 0.972, 0.975]},
          {'dataset': 'mnist', 'variant': 'v7', 'values': [0.972, 0.968, 0.973, 0.970, 0.971]},
          {'dataset': 'mnist', 'variant': 'v8', 'values': [0.971, 0.970, 0.972, 0.973, 0.969]}]
  rows = significance.compare(data, 'default')
  v5 = rows[0]
  assert v5['ci95_low'] > 0 and v5['p_value'] < 0.05 and not v5['significant']
  text = significance.conclusions(rows, data, 'the default', {'mnist': 'MNIST'})
  assert text[0].startswith('v5, v7 and v8: no significant difference from the default')
  assert text[1] == (f'The 95% interval of v5 ({significance.interval(v5)}) excludes 0 on '
                     "its own, but the difference does not survive Holm's correction for the "
                     f'3 comparisons on MNIST (p={v5["p_holm"]:.3f} adjusted): more seeds '
                     'would tell.')
  assert text[2].startswith('Highest mean on MNIST: v5')


def test_seed_values_reads_per_seed_or_the_single_value():
  assert significance.seed_values({'test_accuracy': 0.9}) == [0.9]
  res = {'test_accuracy': 0.9, 'per_seed': {'test_accuracy': [0.9, 0.8]}}
  assert significance.seed_values(res) == [0.9, 0.8]
