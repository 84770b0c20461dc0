"""The figures only a --vary sweep draws, and the rule for which sweep plots can say anything.

A plot that cannot vary is left out rather than drawn: a learning-rate sweep's runs all
have the same parameter count, so accuracy against parameters is one vertical line of
dots. Train seconds are not plotted against the varied value: a cell holds one timing
(its seeds train together) on a machine shared with other work, so the curve would be
load noise without an interval; the comparison table keeps each cell's seconds.
"""

import io

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import matplotlib.ticker  # pylint: disable=g-import-not-at-top

from digits_jax import results as results_lib  # pylint: disable=g-import-not-at-top
from digits_jax import stats


def params_vary(rows):
  """Whether accuracy against parameter count can say anything: some dataset's runs have
  at least two parameter counts (rows: comparison rows with 'dataset' and 'params')."""
  counts = {}
  for row in rows:
    counts.setdefault(row['dataset'], set()).add(int(row['params']))
  return any(len(c) > 1 for c in counts.values())


def mean_ci(values):
  """(mean, lower error, upper error) in percent: the 95% t-interval, none for one seed."""
  s = stats.summarize(values)
  ci = s['ci95'] or [s['mean'], s['mean']]
  return 100 * s['mean'], 100 * (s['mean'] - ci[0]), 100 * (ci[1] - s['mean'])


def _axis(ax, xs, field, title):
  """The x axis of the varied field (log 2 where the values spread), the panel's labels."""
  if min(xs) > 0 and max(xs) > 4 * min(xs):
    ax.set_xscale('log', base=2)
  ax.set_xticks(xs, [f'{x:g}' for x in xs])
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_xlabel(field)
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(f'{title}: test accuracy, mean and 95% interval (* the base)', fontsize=10)
  ax.grid(alpha=0.3)


def vary_effect(cells, field, path, reference, dataset_titles=None):
  """Test accuracy (mean +- 95% interval) against a varied field, one panel per dataset.

  Args:
    cells: dicts with 'dataset', 'variant' (the cell's label), 'x' (the field's value, a
      number), 'series' (the other varied fields' values as a label, '' for one field) and
      'values' (test accuracy per seed, fractions).
    field: the varied field's name (the x axis).
    path: where the PNG goes.
    reference: the base cell's label, marked with a star.
    dataset_titles: optional {dataset: title}.
  """
  groups = {}
  for cell in cells:
    groups.setdefault(cell['dataset'], []).append(cell)
  fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(6 * max(1, len(groups)), 3.8),
                           squeeze=False)
  for ax, (dataset, group) in zip(axes[0], groups.items()):
    for series in dict.fromkeys(c['series'] for c in group):
      line = sorted((c for c in group if c['series'] == series), key=lambda c: c['x'])
      points = [mean_ci(c['values']) for c in line]
      ax.errorbar([c['x'] for c in line], [p[0] for p in points],
                  yerr=[[p[1] for p in points], [p[2] for p in points]],
                  fmt='o-', capsize=4, label=series or None)
    for c in group:
      if c['variant'] == reference:
        ax.plot([c['x']], [mean_ci(c['values'])[0]], '*', color='black', markersize=14,
                zorder=4)
    _axis(ax, sorted({c['x'] for c in group}), field,
          (dataset_titles or {}).get(dataset, dataset))
    if any(c['series'] for c in group):
      ax.legend(fontsize=8)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=100, bbox_inches='tight')
  plt.close(fig)
  results_lib.write_bytes(path, buf.getvalue())
