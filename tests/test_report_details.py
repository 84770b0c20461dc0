"""The report's details (issue 22, item 11): readable probability labels, a compact
misclassified grid, tables that scroll instead of overflowing, and no spread for one seed.
No training: synthetic images and rows."""

import re

import numpy as np
import matplotlib.pyplot as plt
import pytest
from PIL import Image

from digits_jax import comparison
from digits_jax import figures
from digits_jax import html_page
from helpers import BROWSER, chromium


@pytest.mark.parametrize('n, cols, rows', [(10, 5, 2), (30, 6, 5), (7, 4, 2), (1, 1, 1),
                                           (75, 10, 8)])
def test_the_grid_has_few_holes(n, cols, rows):
  assert figures.grid_layout(n, (28, 28), 2)[:2] == (cols, rows)


def test_the_misclassified_grid_is_mostly_images(tmp_path):
  """Before: 39% of the PNG's pixel rows were blank (bands above, below and between
  rows); now the figure has the mosaic's own aspect."""
  images = (np.random.default_rng(0).random((10, 28, 28)) > 0.5).astype(np.uint8) * 255
  labels = np.arange(10)
  path = str(tmp_path / 'wrong.png')
  figures.misclassified(images, labels, labels, (labels + 1) % 10,
                        [str(c) for c in range(10)], path, ' - replica 0 (seed 0) of 3 seeds')
  pixels = np.asarray(Image.open(path).convert('L'))
  assert (pixels > 250).all(axis=1).mean() < 0.3
  assert pixels.shape[1] > pixels.shape[0]  # 2 rows of 5, not 3 rows of 4.


def test_every_bar_is_labelled_after_its_end_within_the_axes():
  fig, ax = plt.subplots()
  ax.set_xlim(0, figures.LABEL_ROOM)
  for row, p in enumerate((1.0, 0.2, 0.0001)):
    figures.bar_label(ax, row, p)
  fig.canvas.draw()
  texts = {t.get_text(): t for t in ax.texts}
  box = ax.get_window_extent()
  extents = {k: t.get_window_extent() for k, t in texts.items()}
  plt.close(fig)
  assert set(texts) == {'100.0%', '20.0%'}  # Nothing for a probability under 0.1%.
  for text, p in (('100.0%', 1.0), ('20.0%', 0.2)):
    assert texts[text].get_position()[0] > p and texts[text].get_color() == 'black'
    assert extents[text].x1 <= box.x1  # A full bar's label fits inside the axes.


def test_the_recognized_figure_is_drawn_at_the_width_the_page_shows(tmp_path):
  """The page shows it at most 480 px wide: drawn wider, its 8-point text shrank to ~5."""
  images = np.zeros((3, 28, 28), np.uint8)
  probs = np.full(10, 0.01)
  probs[3] = 0.91
  rec = dict(index=1, true=3, predicted=3, true_name='3', predicted_name='3',
             probabilities=probs.tolist())
  path = str(tmp_path / 'recognized.png')
  figures.recognized(images, [rec, dict(rec, index=2)], [str(c) for c in range(10)], path)
  assert Image.open(path).size[0] <= 480


def test_tables_scroll_sideways_instead_of_overflowing_the_page():
  wide = html_page.table([f'column {k}' for k in range(40)], [list(range(40))])
  assert wide.startswith('<div class="tw"><table>') and wide.endswith('</table></div>')
  rule = html_page.CSS[html_page.CSS.index('.tw{'):].split('}')[0]
  assert 'overflow-x:auto' in rule and 'max-width:100%' in rule


def _row(n, std):
  """A comparison row with the fields `formatted` reads."""
  row = {k: 0.97 for k in ('best_val_accuracy', 'final_val_accuracy', 'test_accuracy',
                           'test_accuracy_mean', 'test_accuracy_min', 'test_accuracy_max')}
  ci = (0.96, 0.98) if n > 1 else (None, None)
  return dict(row, n=n, test_accuracy_std=std, test_accuracy_ci95_low=ci[0],
              test_accuracy_ci95_high=ci[1], validation_split=0.1, test_loss=0.1,
              train_seconds=1.0, train_seconds_per_seed=1.0, params=101770)


def test_one_seed_has_no_spread_rather_than_zero():
  assert comparison.formatted(_row(1, 0.0))['test_accuracy_std'] == 'one seed: no spread'
  assert comparison.formatted(_row(3, 0.0012))['test_accuracy_std'] == '0.12 pt'


@pytest.mark.slow  # Starts Chromium (about 2 s).
@pytest.mark.skipif(BROWSER is None, reason='needs Chromium (apt-get install chromium)')
def test_a_wide_table_scrolls_inside_the_page_in_a_browser(tmp_path):
  """Measured: the two-run compare page was 1,176 px wide in a 900 px window; now 885."""
  header = ['run', 'differs'] + [f'a long column title {k}' for k in range(20)]
  wide = html_page.table(header, [['v1', 'num_epochs=2, num_seeds=3'] + ['97.09%'] * 20],
                         left=(0, 1))
  page = html_page.page('wide', 'a wide table', [html_page.section('Comparison table', wide)])
  script = ('<script>document.body.dataset.width = document.documentElement.scrollWidth;'
            '</script></body>')
  path = tmp_path / 'wide.html'
  path.write_text(page.replace('</body>', script), encoding='utf-8')
  proc = chromium('--dump-dom', '--window-size=900,700', f'file://{path}',
                  user_data_dir=tmp_path / 'profile')
  width = re.search(r'data-width="(\d+)"', proc.stdout)
  assert width, proc.stderr[-2000:]
  assert int(width.group(1)) <= 900


def test_a_figure_drawn_beyond_its_canvas_keeps_what_lies_outside(tmp_path):
  fig = plt.figure(figsize=(2, 1))
  fig.text(0.5, 0.5, 'a line of text far wider than its figure of two inches', ha='center')
  figures.save(fig, str(tmp_path / 'wide.png'))
  wide = np.asarray(Image.open(tmp_path / 'wide.png').convert('L'))
  assert wide.shape[1] > 300  # The canvas is 200 pixels wide; the text about 330.
  dark = np.argwhere(wide < 128)
  assert dark[:, 1].min() >= 5 and wide.shape[1] - 1 - dark[:, 1].max() >= 5


def test_a_figure_is_cropped_like_savefig_tight_without_losing_what_was_drawn(tmp_path):
  """figures.save draws once and crops to the drawn pixels plus 0.1 inch, as
  savefig(bbox_inches='tight') crops to the artists' box (laying the figure out twice):
  the same size to a pixel or two, with every dark pixel of the title, ticks and labels kept."""
  def figure():
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([0, 1], [0, 1], color='black')
    ax.set_title('A title at the top')
    ax.set_xlabel('the x label at the bottom')
    ax.set_ylabel('y')
    return fig
  figures.save(figure(), str(tmp_path / 'once.png'))
  figure().savefig(tmp_path / 'tight.png', dpi=100, bbox_inches='tight')
  once = np.asarray(Image.open(tmp_path / 'once.png').convert('L'))
  tight = np.asarray(Image.open(tmp_path / 'tight.png').convert('L'))
  assert np.allclose(once.shape, tight.shape, atol=2), (once.shape, tight.shape)
  assert abs(int((once < 128).sum()) - int((tight < 128).sum())) < 0.02 * (tight < 128).sum()
  for image in (once, tight):  # Margins of blank pixels on every side, as savefig leaves.
    dark = np.argwhere(image < 250)
    assert dark.min(axis=0).min() >= 5 and (np.array(image.shape) - 1 - dark.max(axis=0)).min() >= 5
