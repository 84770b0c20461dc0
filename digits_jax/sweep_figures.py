"""The sweep's figures: its cells compared, one panel per dataset (matplotlib, as
figures.py, whose `save` writes them)."""

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import matplotlib.ticker  # pylint: disable=g-import-not-at-top
import numpy as np

from digits_jax import figures
from digits_jax import stats

# Ten colours and ten markers: any ten runs of a panel differ in both.
COLORS = tuple(matplotlib.colormaps['tab10'].colors)
MARKERS = ('o', 's', '^', 'D', 'v', 'P', 'X', '*', 'h', '<')


def run_styles(names):
  """{label: (colour, marker)}, assigned in order of first appearance, one per label."""
  unique = list(dict.fromkeys(names))
  return {n: (COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]) for i, n in enumerate(unique)}


def _legend_outside(ax):
  """The legend to the right of the panel, where it covers no point."""
  ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
            frameon=False)


def _dataset_panels(groups, *, width=6, height=4):
  """A figure with one panel per dataset, side by side; returns (fig, axes[1, n])."""
  return plt.subplots(1, max(1, len(groups)), figsize=(width * max(1, len(groups)), height),
                      squeeze=False)


def sweep_accuracy_vs_params(rows, path, dataset_titles=None):
  """Test accuracy against parameter count, one panel per dataset, each run labelled.

  Args:
    rows: dicts with 'dataset', 'variant', 'params' and 'test_accuracy' (comparison rows).
    path: where the PNG goes.
    dataset_titles: optional {dataset: title} for the panel titles.
  """
  groups = figures.grouped((r['dataset'], r) for r in rows)
  styles = run_styles(r['variant'] for r in rows)
  fig, axes = _dataset_panels(groups, width=7.5, height=4.2)  # Room for the legend.
  for ax, (dataset, runs) in zip(axes[0], groups.items()):
    params = [float(r['params']) for r in runs]
    acc = [100 * float(r['test_accuracy']) for r in runs]
    for r, x, y in zip(runs, params, acc):  # A legend names the runs: no labels to overlap.
      color, marker = styles[r['variant']]
      ax.scatter([x], [y], color=color, marker=marker, s=60, zorder=3, label=r['variant'])
    if max(params) > 3 * min(params):  # Log scale only where it spreads the points.
      ax.set_xscale('log')
      # Ticks at 1, 2 and 5 of each decade: several labelled ticks over any spread.
      ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f'{x:,.0f}'))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.tick_params(axis='x', labelsize=8)
    _legend_outside(ax)
    ax.margins(x=0.15, y=0.15)
    ax.set_xlabel('parameters' + (' (log scale)' if ax.get_xscale() == 'log' else ''))
    ax.set_ylabel('test accuracy (%)')
    ax.set_title((dataset_titles or {}).get(dataset, dataset))
    ax.grid(alpha=0.3, which='both')
  fig.tight_layout()
  figures.save(fig, path)


def sweep_val_curves(histories, path, dataset_titles=None):
  """Validation accuracy per epoch of every run, overlaid, one panel per dataset.

  Args:
    histories: (dataset, variant, history) triples; history as results.read_history gives.
    path: where the PNG goes.
    dataset_titles: optional {dataset: title} for the panel titles.
  """
  groups = figures.grouped((d, (v, h)) for d, v, h in histories)
  styles = run_styles(v for _, v, _ in histories)
  fig, axes = _dataset_panels(groups, width=7.5, height=4.2)  # Room for the legend.
  for ax, (dataset, runs) in zip(axes[0], groups.items()):
    for variant, history in runs:
      color, marker = styles[variant]
      ax.plot([h['epoch'] for h in history], [100 * h['val_accuracy'] for h in history],
              '-', marker=marker, color=color, markersize=4, label=variant)
    epochs = sorted({h['epoch'] for _, history in runs for h in history})
    if len(epochs) <= 20:
      ax.set_xticks(epochs)
    else:
      ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel('epoch')
    ax.set_ylabel('validation accuracy (%)')
    ax.set_title((dataset_titles or {}).get(dataset, dataset))
    ax.grid(alpha=0.3)
    _legend_outside(ax)
  fig.tight_layout()
  figures.save(fig, path)


def _mean_ci(values):
  """(mean, lower error, upper error) in percent: the 95% t-interval, or none for one seed."""
  s = stats.summarize(values)
  ci = s['ci95'] or [s['mean'], s['mean']]
  return 100 * s['mean'], 100 * (s['mean'] - ci[0]), 100 * (ci[1] - s['mean'])


def sweep_means(cells, path, dataset_titles=None):
  """Mean test accuracy +- 95% interval per config, one panel per dataset, side by side.

  Args:
    cells: dicts with 'dataset', 'variant' and 'values' (test accuracy per seed, fractions).
    path: where the PNG goes.
    dataset_titles: optional {dataset: title} for the panel titles.
  """
  groups = figures.grouped((c['dataset'], c) for c in cells)
  fig, axes = _dataset_panels(groups)
  for ax, (dataset, group) in zip(axes[0], groups.items()):
    xs = np.arange(len(group))
    for x, cell in zip(xs, group):
      mean, lo, hi = _mean_ci(cell['values'])
      seeds = 100 * np.asarray(cell['values'])
      ax.scatter(np.full(len(seeds), x + 0.18), seeds, s=8, color='#999999', zorder=2)
      ax.errorbar([x], [mean], yerr=[[lo], [hi]], fmt='o', color='#1f77b4', capsize=4,
                  zorder=3)
    ax.set_xticks(xs, [c['variant'] for c in group], rotation=45 if len(group) > 12 else 0)
    n = sorted({len(c['values']) for c in group})
    ax.set_ylabel('test accuracy (%)')
    ax.set_title(f'{(dataset_titles or {}).get(dataset, dataset)}: mean and 95% interval '
                 f'(grey: seeds; n={n[0] if len(n) == 1 else f"{n[0]}-{n[-1]}"})', fontsize=10)
    ax.grid(alpha=0.3, axis='y')
    ax.margins(x=0.05)
  fig.tight_layout()
  figures.save(fig, path)


def vary_effect(cells, field, path, dataset_titles=None):
  """Test accuracy (mean +- 95% interval) and train seconds against a varied field.

  Args:
    cells: dicts with 'dataset', 'x' (the field's value, a number), 'series' (the other
      varied fields' values as a label, '' for a one-factor sweep), 'values' (test
      accuracy per seed, fractions) and 'train_seconds'.
    field: the varied field's name (the x axis).
    path: where the PNG goes.
    dataset_titles: optional {dataset: title}.
  """
  groups = figures.grouped((c['dataset'], c) for c in cells)
  fig, axes = plt.subplots(max(1, len(groups)), 2, figsize=(11, 3.6 * max(1, len(groups))),
                           squeeze=False)
  for (ax_acc, ax_sec), (dataset, group) in zip(axes, groups.items()):
    for series in dict.fromkeys(c['series'] for c in group):
      line = sorted((c for c in group if c['series'] == series), key=lambda c: c['x'])
      xs = [c['x'] for c in line]
      stats = [_mean_ci(c['values']) for c in line]
      ax_acc.errorbar(xs, [s[0] for s in stats], yerr=[[s[1] for s in stats],
                                                       [s[2] for s in stats]],
                      fmt='o-', capsize=4, label=series or None)
      ax_sec.plot(xs, [c['train_seconds'] for c in line], 'o-', label=series or None)
    xs = sorted({c['x'] for c in group})
    title = (dataset_titles or {}).get(dataset, dataset)
    for ax, what in ((ax_acc, 'test accuracy (%), mean and 95% interval'),
                     (ax_sec, 'train seconds (all seeds of a cell)')):
      if min(xs) > 0 and max(xs) > 4 * min(xs):
        ax.set_xscale('log', base=2)
      ax.set_xticks(xs, [f'{x:g}' for x in xs])
      ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
      ax.set_xlabel(field)
      ax.set_ylabel(what.split(',')[0].split(' (all')[0])
      ax.set_title(f'{title}: {what}', fontsize=10)
      ax.grid(alpha=0.3)
      if any(c['series'] for c in group):
        ax.legend(fontsize=8)
  fig.tight_layout()
  figures.save(fig, path)
