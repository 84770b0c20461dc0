"""The image grids of a run (the first training images, the misclassified test images):
one mosaic per figure, laid out so that no band of white splits it; and `save`, the one
way every figure is written (atomically, as results.write_bytes does)."""

import io
import math

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from digits_jax import results as results_lib


def save(fig, path):
  """Writes `fig` as a PNG at `path` (100 dpi, trimmed to its content) and closes it."""
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=100, bbox_inches='tight')
  plt.close(fig)
  results_lib.write_bytes(path, buf.getvalue())


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


def _grid(images, titles, path, suptitle, title_colors=None):
  """Draws images in a near-square grid with a title over each.

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
  save(fig, path)


def samples(images, labels, class_names, path):
  """The first N training images with their labels (lab step 2)."""
  titles = [f'{class_names[l]}' for l in labels]
  _grid(images, titles, path, f'First {len(images)} training images')


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
  _grid(images[indices], titles, path,
        f'First {len(indices)} misclassified test images{note}', ['crimson'] * len(indices))
