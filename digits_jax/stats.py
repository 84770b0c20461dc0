"""Statistics over seeds (scipy.stats, not hand-written quantiles): summaries with
t-intervals, Welch's comparison of two sets of seeds, Holm's correction, a verdict.

Every number a multi-seed run or a sweep reports comes with its spread; this module is the
one place that computes it, so the console, results.json, the sweep's tables, the report
and the benchmark agree.
"""

import math

import numpy as np
from scipy import stats as sps


def summarize(values, confidence=0.95):
  """Mean, sample std (ddof=1), n, min, max and a Student-t interval for the mean.

  Args:
    values: a sequence of finite numbers (one per seed).
    confidence: the interval's coverage.

  Returns:
    A JSON-ready dict {'mean', 'std', 'n', 'min', 'max', 'ci95'}; with n = 1 the std is 0.0
    and 'ci95' is None (one seed says nothing about the spread).
  """
  x = np.asarray(values, np.float64)
  if x.ndim != 1 or not len(x):
    raise ValueError(f'summarize needs a non-empty 1-d sequence, got shape {x.shape}.')
  n, mean = len(x), float(x.mean())
  std = float(x.std(ddof=1)) if n > 1 else 0.0
  ci = None
  if n > 1:
    if std == 0.0:
      ci = [mean, mean]
    else:
      lo, hi = sps.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
      ci = [float(lo), float(hi)]
  return {'mean': mean, 'std': std, 'n': n, 'min': float(x.min()), 'max': float(x.max()),
          'ci95': ci}


def welch(a, b, confidence=0.95):
  """mean(a) - mean(b) with Welch's t interval and two-sided p-value (unequal variances).

  scipy.stats.ttest_ind(a, b, equal_var=False) gives the statistic, degrees of freedom,
  p-value and the interval of the difference; this only packs them for JSON.

  Args:
    a, b: sequences of finite numbers (one per seed), e.g. a variant's and the default's
      test accuracies.
    confidence: the interval's coverage.

  Returns:
    {'difference', 'ci95', 'p_value', 't', 'df', 'n_a', 'n_b'}. With fewer than two values
    on a side, or no spread on either, the test is undefined: 'ci95', 'p_value', 't' and
    'df' are None.
  """
  x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if x.ndim != 1 or y.ndim != 1 or not len(x) or not len(y):
    raise ValueError(f'welch needs two non-empty 1-d sequences, got shapes {x.shape}, '
                     f'{y.shape}.')
  out = {'difference': float(x.mean() - y.mean()), 'ci95': None, 'p_value': None,
         't': None, 'df': None, 'n_a': len(x), 'n_b': len(y)}
  if len(x) < 2 or len(y) < 2 or (x.std() == 0 and y.std() == 0):
    return out
  res = sps.ttest_ind(x, y, equal_var=False)
  ci = res.confidence_interval(confidence)
  out.update(ci95=[float(ci.low), float(ci.high)], p_value=float(res.pvalue),
             t=float(res.statistic), df=float(res.df))
  return out


def holm(p_values):
  """Holm's step-down adjustment of p-values for multiple comparisons.

  The i-th smallest of m p-values becomes max over j <= i of min(1, (m - j + 1) p_(j)):
  rejecting where the adjusted p < alpha keeps the family-wise error rate at alpha.
  (scipy.stats offers only Benjamini-Hochberg, `false_discovery_control`.)

  Args:
    p_values: a sequence of p-values; None entries (undefined tests) stay None and do not
      count in m.

  Returns:
    The adjusted p-values, in the input's order.
  """
  known = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
  adjusted, running = [None] * len(p_values), 0.0
  for rank, (p, i) in enumerate(known):
    running = max(running, min(1.0, (len(known) - rank) * p))
    adjusted[i] = running
  return adjusted


def verdict(comparison, margin):
  """Reads a `welch` comparison against an equivalence margin (same units as the values).

  Returns 'equivalent' when the whole interval lies within +-margin, 'better' when it lies
  above 0, 'worse' when below 0, else 'inconclusive' (also when there is no interval).
  """
  ci = comparison['ci95']
  if ci is None:
    return 'inconclusive'
  if -margin <= ci[0] and ci[1] <= margin:
    return 'equivalent'
  if ci[0] > 0:
    return 'better'
  if ci[1] < 0:
    return 'worse'
  return 'inconclusive'
