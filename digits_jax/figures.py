"""Figures: with image_figures.py (the image grids), the only modules that call matplotlib.
Each is drawn from saved results."""

import os
import warnings

import matplotlib

matplotlib.use('Agg')
import matplotlib.colors  # pylint: disable=g-import-not-at-top
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import matplotlib.ticker  # pylint: disable=g-import-not-at-top
import numpy as np

from digits_jax import image_figures
from digits_jax import results as results_lib
from digits_jax import stats
from digits_jax import train_state as ts

FILES = {
    'samples': 'samples.png',
    'recognized': 'recognized.png',
    'misclassified': 'misclassified.png',
    'curves': 'curves.png',
    'confusion': 'confusion.png',
}


def replica_note(res):
  """'' for a one-seed run; else which replica the model-dependent figures show."""
  seeds = res.get('seeds') or []
  return f' - replica 0 (seed {seeds[0]}) of {len(seeds)} seeds' if len(seeds) > 1 else ''


LABEL_ROOM = 1.22  # The bars' x axis runs to 122%: a full bar's label fits after it.


def bar_label(ax, row, p):
  """A probability's value just after its bar, in black on white (text on the dark bar or
  squeezed against the edge was unreadable); none under 0.1%."""
  if p >= 0.001:
    ax.text(p + 0.015, row, f'{p:.1%}', va='center', ha='left', fontsize=8)


def recognized(images, records, class_names, path, note=''):
  """Each chosen test image beside its 10 output probabilities (lab step 8), as horizontal
  bars so that every class name reads level, each bar with its value.

  `note` becomes the figure's title (which replica of a many-seed run is shown).
  """
  n = len(records)
  # Drawn at the size the report shows it (480 px wide), so its text is not shrunk.
  fig, axes = plt.subplots(n, 2, figsize=(4.8, 2.3 * n + 0.2), squeeze=False,
                           gridspec_kw={'width_ratios': [1, 2.8]})
  for (ax_img, ax_bar), rec in zip(axes, records):
    ok = rec['predicted'] == rec['true']
    ax_img.imshow(images[rec['index']], cmap='binary', vmin=0, vmax=255)
    ax_img.axis('off')
    ax_img.set_title(f'test #{rec["index"]}\ntrue: {rec["true_name"]}', fontsize=9)
    probs = np.asarray(rec['probabilities'])
    colors = ['#bbbbbb'] * len(probs)
    colors[rec['true']] = '#2a9d8f'
    if not ok:
      colors[rec['predicted']] = '#e63946'
    rows = np.arange(len(probs))
    ax_bar.barh(rows, probs, color=colors)
    for r, p in zip(rows, probs):
      bar_label(ax_bar, r, p)
    ax_bar.set_xlim(0, LABEL_ROOM)
    ax_bar.set_yticks(rows)
    ax_bar.set_yticklabels(class_names, fontsize=8)
    ax_bar.invert_yaxis()  # Class 0 on top.
    ax_bar.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax_bar.set_xticks([0, 0.5, 1])
    ax_bar.tick_params(axis='x', labelsize=8)
    ax_bar.set_title(f'predicted: {rec["predicted_name"]} ({probs.max():.1%})'
                     f'{"" if ok else "  WRONG"}', fontsize=9,
                     color='black' if ok else '#e63946')
  if note:
    fig.suptitle(f'Recognised test images{note}', fontsize=10)
  fig.tight_layout()
  image_figures.save(fig, path)


def _by_seed(history):
  """{seed: rows} of a history whose rows carry a 'seed' (one group when they do not)."""
  return _by_dataset((h.get('seed'), h) for h in history)


def _seeds_training(groups, epochs):
  """'4 seeds', or '4 seeds (2 from epoch 7)' once early stopping ended some seeds' epochs."""
  counts = [sum(any(h['epoch'] == e for h in rows) for rows in groups.values()) for e in epochs]
  fewer = [(e, n) for e, n in zip(epochs, counts) if n < len(groups)]
  return f'{len(groups)} seeds' + (f' ({fewer[0][1]} from epoch {fewer[0][0]})' if fewer else '')


def curves(history, path):
  """Training and validation value per epoch of each declared metric (one panel each, in
  train_state.METRICS order).

  A many-seed history (rows with a 'seed') draws the mean over the seeds, with a band
  from their minimum to their maximum; where early stopping ended some seeds' epochs,
  over the seeds still training. A metric declared after the run was made (not in its
  history) is left out.
  """
  groups = _by_seed(history)
  epochs = sorted({h['epoch'] for h in history})
  metrics = [m for m in ts.METRICS if not history or m.name in history[0]]
  fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
  for ax, key, label in zip(axes[0], [m.name for m in metrics], [m.title for m in metrics]):
    for column, style, name in ((key, 'o-', f'training {key}'),
                                ('val_' + key, 's--', f'validation {key}')):
      values = np.full((len(groups), len(epochs)), np.nan)  # NaN: the seed had stopped.
      for row, rows in zip(values, groups.values()):
        row[[epochs.index(h['epoch']) for h in rows]] = [h[column] for h in rows]
      if len(groups) == 1:
        ax.plot(epochs, values[0], style, label=name)
        continue
      with warnings.catch_warnings():  # An all-NaN column: no validation (split 0).
        warnings.simplefilter('ignore', RuntimeWarning)
        mean, low, high = (np.nanmean(values, 0), np.nanmin(values, 0),
                           np.nanmax(values, 0))
      line, = ax.plot(epochs, mean, style, markersize=3, label=name)
      ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel('epoch')
    ax.set_title(label if len(groups) == 1 else
                 f'{label}: mean of {_seeds_training(groups, epochs)}, band from min to max')
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_xticks(epochs if len(epochs) <= 20 else ax.get_xticks())
  fig.tight_layout()
  image_figures.save(fig, path)


def confusion_matrix(labels, predicted, num_classes=10):
  """Counts [true, predicted]."""
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (labels, predicted), 1)
  return cm


def confusion(labels, predicted, class_names, path, note=''):
  """The test set's confusion matrix: counts in each cell, colour on a log scale (so the
  few errors show beside the large diagonal), read off the colour bar; `note` is added to
  the title."""
  cm = confusion_matrix(labels, predicted, len(class_names))
  fig, ax = plt.subplots(figsize=(9, 7.5))
  norm = matplotlib.colors.SymLogNorm(linthresh=1, vmin=0, vmax=max(int(cm.max()), 1))
  image = ax.imshow(cm, cmap='Blues', norm=norm)
  bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
  bar.set_label('test images (log scale)')
  bar.ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f'{x:,.0f}'))
  for t in range(len(class_names)):
    for p in range(len(class_names)):
      ax.text(p, t, str(cm[t, p]), ha='center', va='center', fontsize=9,
              color='white' if norm(cm[t, p]) > 0.6 else 'black')
  ax.set_xticks(range(len(class_names)))
  ax.set_xticklabels(class_names, rotation=30 if len(class_names[0]) > 2 else 0,
                     ha='right' if len(class_names[0]) > 2 else 'center', fontsize=10)
  ax.set_yticks(range(len(class_names)))
  ax.set_yticklabels(class_names, fontsize=10)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(f'Confusion matrix (test set){note}')
  fig.tight_layout()
  image_figures.save(fig, path)


def draw_image_grids(workdir, config, res, preds, train_images, train_labels, test_images,
                     class_names):
  """Draws the figures that show dataset images (the first N training images, the chosen
  and the misclassified test images) from a run's saved results and predictions (of
  replica 0 in a many-seed run, as the titles then say)."""
  path = lambda key: os.path.join(workdir, FILES[key])
  n = min(config.num_show, len(train_images))
  image_figures.samples(train_images[:n], train_labels[:n], class_names, path('samples'))
  if res['recognized']:
    recognized(test_images, res['recognized'], class_names, path('recognized'),
               replica_note(res))
  wrong = results_lib.misclassified(preds['probabilities'], preds['labels'])
  image_figures.misclassified(test_images, wrong[:config.num_misclassified_show],
                              preds['labels'], preds['predicted'], class_names,
                              path('misclassified'), replica_note(res))


def draw_all(workdir, config, train_images, train_labels, test_images, class_names):
  """Draws every figure of a finished run from its saved results; returns the paths."""
  path = lambda key: os.path.join(workdir, FILES[key])
  preds = results_lib.read_predictions(workdir)
  res = results_lib.read_json(os.path.join(workdir, results_lib.FILES['results']))
  draw_image_grids(workdir, config, res, preds, train_images, train_labels, test_images,
                   class_names)
  curves(results_lib.read_history(workdir, all_seeds=True), path('curves'))
  confusion(preds['labels'], preds['predicted'], class_names, path('confusion'),
            replica_note(res))
  return [path(k) for k in FILES if os.path.exists(path(k))]


def _by_dataset(items):
  """Groups (key, item) pairs, e.g. (dataset, run), into an ordered dict of lists."""
  groups = {}
  for dataset, item in items:
    groups.setdefault(dataset, []).append(item)
  return groups


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
  groups = _by_dataset((r['dataset'], r) for r in rows)
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
  image_figures.save(fig, path)


def sweep_val_curves(histories, path, dataset_titles=None):
  """Validation accuracy per epoch of every run, overlaid, one panel per dataset.

  Args:
    histories: (dataset, variant, history) triples; history as results.read_history gives.
    path: where the PNG goes.
    dataset_titles: optional {dataset: title} for the panel titles.
  """
  groups = _by_dataset((d, (v, h)) for d, v, h in histories)
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
  image_figures.save(fig, path)


def prediction(original, prepared, probabilities, class_names, path, title=''):
  """An image file's prediction: the original, the 28x28 the network saw, the probabilities.

  Args:
    original: the image as read (uint8 [H, W, 4] RGBA or [H, W] grey).
    prepared: the uint8 [28, 28] the network saw (light on dark, as the datasets).
    probabilities: the network's 10 probabilities.
    class_names: the 10 class names.
    path: where the PNG goes.
    title: the figure's title (e.g. the file's name).
  """
  probs = np.asarray(probabilities)
  best = int(probs.argmax())
  fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), gridspec_kw={'width_ratios': [1, 1, 1.8]})
  axes[0].imshow(original, cmap='gray' if np.ndim(original) == 2 else None)
  axes[0].set_title('original', fontsize=9)
  axes[1].imshow(prepared, cmap='gray', vmin=0, vmax=255)
  axes[1].set_title('what the network saw (28x28)', fontsize=9)
  for ax in axes[:2]:
    ax.set_xticks([])
    ax.set_yticks([])
  colors = ['#bbbbbb'] * len(probs)
  colors[best] = '#2a9d8f'
  axes[2].bar(range(len(probs)), probs, color=colors)
  axes[2].set_ylim(0, 1)
  axes[2].set_xticks(range(len(probs)))
  long_names = len(class_names[0]) > 2
  axes[2].set_xticklabels(class_names, rotation=45 if long_names else 0,
                          ha='right' if long_names else 'center', fontsize=8)
  axes[2].set_title(f'predicted: {class_names[best]} ({probs[best]:.1%})', fontsize=9)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  image_figures.save(fig, path)


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
  groups = _by_dataset((c['dataset'], c) for c in cells)
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
  image_figures.save(fig, path)


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
  groups = _by_dataset((c['dataset'], c) for c in cells)
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
  image_figures.save(fig, path)
