"""Statistics over seeds: summaries with t-intervals (scipy.stats, not hand-written quantiles).

Every number a multi-seed run or a sweep reports comes with its spread; this module is the
one place that computes it, so the console, results.json and the report agree.
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
