"""A run's figures, each drawn from saved results (sweep_figures.py draws a sweep's; these
two are the only modules that call matplotlib)."""

import hashlib
import io
import math
import os
import warnings

import matplotlib

matplotlib.use('Agg')
import matplotlib.colors  # pylint: disable=g-import-not-at-top
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import matplotlib.ticker  # pylint: disable=g-import-not-at-top
import numpy as np
import PIL.Image

from digits_jax import results as results_lib
from digits_jax import train_state as ts

FILES = {
    'samples': 'samples.png',
    'recognized': 'recognized.png',
    'misclassified': 'misclassified.png',
    'curves': 'curves.png',
    'confusion': 'confusion.png',
}


DPI = 100
PAD_INCHES = 0.1  # Around the drawing's tight box, as savefig(bbox_inches='tight') pads it.


def save(fig, path):
  """Writes the figure as a PNG (atomically) and closes it (see `png`)."""
  results_lib.write_bytes(path, png(fig))


def png(fig):
  """The figure's PNG bytes (it is closed), cropped to what is drawn plus PAD_INCHES, as
  savefig(bbox_inches='tight') crops, but drawn once: savefig lays the figure out to
  measure it, then again to draw it, and measuring the artists' box (get_tightbbox) costs
  half a draw again; a sweep draws hundreds. The box is found in the drawn pixels, the
  ones unlike the figure's colour. A drawing that reaches the canvas's edge may go beyond
  it, so it goes through savefig, which can reach what the canvas cut off."""
  fig.set_dpi(DPI)
  fig.canvas.draw()
  pixels = np.asarray(fig.canvas.buffer_rgba())
  background = np.round(np.asarray(matplotlib.colors.to_rgba(fig.get_facecolor())) * 255)
  ink = (pixels != background.astype(np.uint8)).any(axis=2)
  rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
  h, w = ink.shape
  buf = io.BytesIO()
  if not len(rows) or rows[0] == 0 or cols[0] == 0 or rows[-1] == h - 1 or cols[-1] == w - 1:
    fig.savefig(buf, format='png', dpi=DPI, bbox_inches='tight', pad_inches=PAD_INCHES)
  else:
    pad = round(PAD_INCHES * DPI)
    y0, y1, x0, x1 = rows[0] - pad, rows[-1] + 1 + pad, cols[0] - pad, cols[-1] + 1 + pad
    out = np.empty((y1 - y0, x1 - x0, 4), np.uint8)
    out[:] = background
    top, left = max(y0, 0), max(x0, 0)
    out[top - y0:min(y1, h) - y0, left - x0:min(x1, w) - x0] = pixels[top:y1, left:x1]
    opaque = background[3] == 255  # Then so is every pixel: saved as RGB, a fifth faster.
    PIL.Image.fromarray(np.ascontiguousarray(out[..., :3]) if opaque else out).save(
        buf, format='png')
  plt.close(fig)
  return buf.getvalue()


GRID_INCHES = 1.0  # Width of one image in a grid; titles sit just above each image.
GRID_FONT = 8


def grid_layout(n, shape, lines):
  """(cols, rows, cell_w, cell_h, top) in image pixels of a grid of `n` images of `shape`
  with `lines` title lines each: a near-square grid whose last row is as full as it can be
  (10 images are 2 x 5, not 3 x 4 with two holes), each title row as tall as its text."""
  h, w = shape
  square = max(1, min(10, math.ceil(math.sqrt(n))))
  holes = lambda c: math.ceil(n / c) * c - n
  cols = min(range(square, min(square + 2, 10) + 1), key=lambda c: (holes(c), c))
  rows = max(1, math.ceil(n / cols))
  px_per_point = w / GRID_INCHES / 72
  top = math.ceil(lines * GRID_FONT * 1.25 * px_per_point) + 1
  return cols, rows, w + max(2, w // 7), h + top + max(2, h // 10), top


def _grid(images, titles, suptitle, title_colors=None):
  """A figure of images in a near-square grid with a title over each.

  One mosaic image in one axes, the titles as text on it: a figure of 75 small axes
  costs seconds to lay out and draw, this a fraction of one (the sweep draws many). The
  figure has the mosaic's own aspect, so no band of white surrounds or splits the grid.
  """
  images = np.asarray(images)
  n, (h, w) = len(images), images.shape[1:3]
  lines = max([t.count('\n') + 1 for t in titles] or [1])
  cols, rows, cell_w, cell_h, top = grid_layout(n, (h, w), lines)
  mosaic = np.zeros((rows * cell_h, cols * cell_w), images.dtype if n else np.uint8)
  pad = (cell_w - w) // 2
  for k, image in enumerate(images):
    y, x = divmod(k, cols)
    mosaic[y * cell_h + top:y * cell_h + top + h, x * cell_w + pad:x * cell_w + pad + w] = image
  inch = GRID_INCHES / w  # Inches per image pixel.
  title_in = 0.3
  fig = plt.figure(figsize=(cols * cell_w * inch, rows * cell_h * inch + title_in))
  ax = fig.add_axes([0, 0, 1, rows * cell_h * inch / (rows * cell_h * inch + title_in)])
  ax.imshow(mosaic, cmap='binary', vmin=0, vmax=255, interpolation='nearest', aspect='auto')
  ax.axis('off')
  for k, title in enumerate(titles):
    y, x = divmod(k, cols)
    ax.text(x * cell_w + cell_w / 2 - 0.5, y * cell_h + top - 1, title, ha='center',
            va='bottom', fontsize=GRID_FONT,
            color=title_colors[k] if title_colors else 'black')
  fig.suptitle(suptitle, fontsize=10, y=1 - 0.05 / (rows * cell_h * inch + title_in))
  return fig


def replica_note(res):
  """'' for a one-seed run; else which replica the model-dependent figures show."""
  seeds = res.get('seeds') or []
  return f' - replica 0 (seed {seeds[0]}) of {len(seeds)} seeds' if len(seeds) > 1 else ''


_SAMPLES = {}  # Drawn samples PNGs by content: a sweep's cells of a dataset share them.


def samples(images, labels, class_names, path):
  """The first N training images with their labels (lab step 2)."""
  titles = [f'{class_names[l]}' for l in labels]
  key = hashlib.sha256(np.ascontiguousarray(images).tobytes() + repr(titles).encode()).digest()
  if key not in _SAMPLES:
    _SAMPLES.clear()  # One kept: cells come dataset by dataset.
    _SAMPLES[key] = png(_grid(images, titles, f'First {len(images)} training images'))
  results_lib.write_bytes(path, _SAMPLES[key])


def misclassified(images, indices, labels, predicted, class_names, path, note=''):
  """The first K misclassified test images: index, true and predicted class (lab step 9).

  `note` is appended to the title (which replica of a many-seed run is shown).
  """
  titles = [f'#{i} true: {class_names[labels[i]]}\npred: {class_names[predicted[i]]}'
            for i in indices]
  if not len(indices):
    fig = plt.figure(figsize=(4, 1))
    fig.text(0.5, 0.5, f'No misclassified test images{note}', ha='center', va='center')
    save(fig, path)
    return
  save(_grid(images[indices], titles, f'First {len(indices)} misclassified test images{note}',
             ['crimson'] * len(indices)), path)


LABEL_ROOM = 1.22  # The bars' x axis runs to 122%: a full bar's label fits after it.


def bar_label(ax, row, p):
  """A probability's value just after its bar, in black on white (text on the dark bar or
  squeezed against the edge was unreadable); none under 0.1%."""
  if p >= 0.001:
    ax.text(p + 0.015, row, f'{p:.1%}', va='center', ha='left', fontsize=8)


def text_inches(fig, texts, size):
  """The width of the widest of `texts` at font `size`, in inches: room for tick labels
  in a layout placed by hand (tight_layout measures every artist, a third of a figure's
  drawing time)."""
  renderer, prop = fig.canvas.get_renderer(), matplotlib.font_manager.FontProperties(size=size)
  return max(renderer.get_text_width_height_descent(t, prop, ismath=False)[0]
             for t in texts) / fig.dpi


def add_axes_inches(fig, x, y, w, h):
  """An axes at (x, y) from the figure's bottom left, w by h, all in inches."""
  fig_w, fig_h = fig.get_size_inches()
  return fig.add_axes([x / fig_w, y / fig_h, w / fig_w, h / fig_h])


RECOGNIZED_ROW = 2.3  # Inches per recognised image: its bars, their title and x labels.


def recognized(images, records, class_names, path, note=''):
  """Each chosen test image beside its 10 output probabilities (lab step 8), as horizontal
  bars so that every class name reads level, each bar with its value.

  `note` becomes the figure's title (which replica of a many-seed run is shown). Drawn at
  the size the report shows it (480 px wide), so its text is not shrunk.
  """
  width, n = 4.8, len(records)
  fig = plt.figure(figsize=(width, RECOGNIZED_ROW * n + (0.4 if note else 0.05)))
  bars_x = 1.4 + text_inches(fig, class_names, 8)  # Image, gap, class names, ticks.
  for k, rec in enumerate(records):
    bottom = RECOGNIZED_ROW * (n - 1 - k)
    ax_img = add_axes_inches(fig, 0.15, bottom + 0.62, 1.0, 1.0)
    ax_bar = add_axes_inches(fig, bars_x, bottom + 0.36, width - 0.15 - bars_x, 1.63)
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
    fig.suptitle(f'Recognised test images{note}', fontsize=10, y=1 - 0.1 / fig.get_figheight(),
                 va='top')
  save(fig, path)


def grouped(items):
  """Groups (key, item) pairs, e.g. (dataset, run), into an ordered dict of lists."""
  groups = {}
  for key, item in items:
    groups.setdefault(key, []).append(item)
  return groups


def _by_seed(history):
  """{seed: rows} of a history whose rows carry a 'seed' (one group when they do not)."""
  return grouped((h.get('seed'), h) for h in history)


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
  fig = plt.figure(figsize=(5.1 * len(metrics) + 0.2, 3.6))  # Panels 4.4 in wide.
  axes = [add_axes_inches(fig, 0.6 + 5.1 * k, 0.6, 4.4, 2.65) for k in range(len(metrics))]
  for ax, key, label in zip(axes, [m.name for m in metrics], [m.title for m in metrics]):
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
  save(fig, path)


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
  fig = plt.figure(figsize=(9, 7.5))
  long_names = len(class_names[0]) > 2
  names_in = text_inches(fig, class_names, 10)
  left = 0.5 + names_in + 0.15  # The y label, the class names, the ticks.
  bottom = 0.45 + (0.5 * names_in if long_names else 0.15)  # Rotated 30 degrees: half high.
  size = min(7.5 - bottom - 0.4, 9 - left - 1.3)  # Room for the title; for the colour bar.
  ax = add_axes_inches(fig, left, bottom, size, size)
  norm = matplotlib.colors.SymLogNorm(linthresh=1, vmin=0, vmax=max(int(cm.max()), 1))
  image = ax.imshow(cm, cmap='Blues', norm=norm)
  bar = fig.colorbar(image, cax=add_axes_inches(fig, left + size + 0.25, bottom, 0.3, size))
  bar.set_label('test images (log scale)')
  bar.ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f'{x:,.0f}'))
  dark = np.asarray(norm(cm)) > 0.6  # The scale applied once: cell by cell it cost 0.1 s.
  for t in range(len(class_names)):
    for p in range(len(class_names)):
      ax.text(p, t, str(cm[t, p]), ha='center', va='center', fontsize=9,
              color='white' if dark[t, p] else 'black')
  ax.set_xticks(range(len(class_names)))
  ax.set_xticklabels(class_names, rotation=30 if long_names else 0,
                     ha='right' if long_names else 'center', fontsize=10)
  ax.set_yticks(range(len(class_names)))
  ax.set_yticklabels(class_names, fontsize=10)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(f'Confusion matrix (test set){note}')
  save(fig, path)


def draw_image_grids(workdir, config, res, preds, train_images, train_labels, test_images,
                     class_names):
  """Draws the figures that show dataset images (the first N training images, the chosen
  and the misclassified test images) from a run's saved results and predictions (of
  replica 0 in a many-seed run, as the titles then say)."""
  path = lambda key: os.path.join(workdir, FILES[key])
  n = min(config.num_show, len(train_images))
  samples(train_images[:n], train_labels[:n], class_names, path('samples'))
  if res['recognized']:
    recognized(test_images, res['recognized'], class_names, path('recognized'),
               replica_note(res))
  wrong = results_lib.misclassified(preds['probabilities'], preds['labels'])
  misclassified(test_images, wrong[:config.num_misclassified_show],
                preds['labels'], preds['predicted'], class_names, path('misclassified'),
                replica_note(res))


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
  save(fig, path)
