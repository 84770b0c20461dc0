"""report.html of a run (its plots redrawn, its missing image grids noted); TensorBoard's
summaries are tested in test_summaries.py.

One tiny run (on the `tiny_data` fixture of conftest.py) is trained once for the module; the
browser tests need Chromium and are skipped without it.
"""

import base64
import contextlib
import io
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from digits_jax import analysis
from digits_jax import figures
from digits_jax import input_pipeline
from digits_jax import html_page
from digits_jax import run_report
from digits_jax import results as results_lib
from digits_jax import train
from helpers import BROWSER, chromium

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADINGS = ('Goal', 'Results', 'Configuration', 'Model summary', 'Training samples',
            'Accuracy and loss curves', 'Recognized test images', 'Misclassified test images',
            'Confusion matrix', 'Per-class accuracy', 'Conclusions', 'Drawing pad')


def tiny_run_config(data_dir):
  """The default config shrunk to train on the tiny data in about a second."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update(dict(data_dir=data_dir, verify_checksums=False, hidden_units=16, num_epochs=3,
                     num_show=6, test_indices=(0, 3),
                     num_misclassified_show=4, progress_bar=False, tensorboard=False,
                     write_report=False))
  return config


@pytest.fixture(scope='module')
def run_dir(tiny_data, tmp_path_factory):
  """A finished tiny run (3 epochs) with its report written."""
  workdir = str(tmp_path_factory.mktemp('report') / 'run')
  with contextlib.redirect_stdout(io.StringIO()):
    train.train_and_evaluate(tiny_run_config(tiny_data), workdir)
  run_report.write_run_report(workdir)
  return workdir


def read(path):
  with open(path, encoding='utf-8') as f:
    return f.read()


def images_of(text):
  """The src of every <img> in an HTML text."""
  return re.findall(r'<img [^>]*src="([^"]*)"', text)


def assert_valid_png_uris(text):
  srcs = images_of(text)
  assert srcs
  for src in srcs:
    assert src.startswith('data:image/png;base64,'), src[:80]
    data = base64.b64decode(src.split(',', 1)[1], validate=True)
    Image.open(io.BytesIO(data)).verify()  # Raises on a truncated or non-PNG image.


def test_report_has_every_section_in_order(run_dir):
  text = read(os.path.join(run_dir, html_page.REPORT))
  assert tuple(re.findall(r'<h2>(.*?)</h2>', text)) == HEADINGS == run_report.RUN_SECTIONS


def test_every_image_is_an_embedded_png_and_nothing_is_external(run_dir):
  text = read(os.path.join(run_dir, html_page.REPORT))
  assert len(images_of(text)) == 5  # samples, curves, recognized, misclassified, confusion.
  assert_valid_png_uris(text)
  refs = re.findall(r'(?:src|href)="([^"]*)"', text)
  assert all(r.startswith(('data:', '#')) for r in refs), refs
  assert 'http://' not in text and 'https://' not in text


def test_report_shows_the_run_data(run_dir):
  text = read(os.path.join(run_dir, html_page.REPORT))
  res = results_lib.read_json(os.path.join(run_dir, 'results.json'))
  conclusions = text.split('<h2>Conclusions</h2>')[1]
  assert f'Best epoch: epoch {res["best_epoch"]} of 3' in conclusions
  assert f'{100 * res["test_accuracy"]:.2f}%' in conclusions
  assert 'Most confused classes' in conclusions or 'No test image was misclassified' in text
  assert f'{res["misclassified_count"]:,} of {res["num_test"]:,} test images' in text
  for rec in res['recognized']:
    assert f'test #{rec["index"]}' in text
  assert 'Total params: 12,730' in text  # The model summary, in <pre>.


def test_cli_writes_the_run_report(run_dir):
  os.remove(os.path.join(run_dir, html_page.REPORT))
  proc = subprocess.run([sys.executable, '-m', 'digits_jax.report', f'--workdir={run_dir}'],
                        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == os.path.join(run_dir, html_page.REPORT)
  assert tuple(re.findall(r'<h2>(.*?)</h2>', read(proc.stdout.strip()))) == HEADINGS


def test_missing_plots_are_redrawn_and_missing_image_grids_noted(run_dir, tmp_path,
                                                                  monkeypatch):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(run_dir, workdir, ignore=shutil.ignore_patterns('checkpoints'))
  for key in ('samples', 'curves', 'confusion', 'recognized'):
    os.remove(os.path.join(workdir, figures.FILES[key]))
  with open(os.path.join(workdir, figures.FILES['misclassified']), 'r+b') as f:
    f.truncate(200)  # A half-written PNG.
  monkeypatch.setattr(input_pipeline, 'load', lambda *a: pytest.fail('loaded the dataset'))
  text = read(run_report.write_run_report(workdir))
  assert_valid_png_uris(text)  # No broken image is embedded.
  assert len(images_of(text)) == 2
  for key in ('curves', 'confusion'):  # Drawn from the saved history and predictions.
    assert html_page.is_png(os.path.join(workdir, figures.FILES[key])), key
  for key in ('samples', 'recognized', 'misclassified'):
    assert f'{figures.FILES[key]} is missing or incomplete' in text, key
  assert tuple(re.findall(r'<h2>(.*?)</h2>', text)) == HEADINGS


def test_many_seed_run_shows_the_per_seed_table(run_dir, tmp_path):
  """results.json's per_seed (issue 13's fields) becomes a table with the spread under it."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(run_dir, workdir)
  path = os.path.join(workdir, 'results.json')
  res = results_lib.read_json(path)
  res.update(seeds=[3, 4, 5], per_seed={
      'test_accuracy': [0.96, 0.97, 0.98], 'test_loss': [0.2, 0.1, 0.15],
      'misclassified_count': [400, 300, 200], 'best_epoch': [3, 2, 3],
      'final_val_accuracy': [0.95, 0.96, 0.97]})
  results_lib.write_json(path, res)
  text = read(run_report.write_run_report(workdir))
  results = text[text.index('<h2>Results</h2>'):text.index('<h2>Configuration</h2>')]
  rows = re.findall(r'<tr>(.*?)</tr>', results)
  assert re.findall(r'<th[^>]*>(.*?)</th>', rows[0]) == [
      'seed', 'test loss', 'test accuracy', 'wrong', 'best epoch', 'final val. acc.']
  assert re.findall(r'<td[^>]*>(.*?)</td>', rows[2]) == [
      '4', '0.1000', '97.00%', '300', '2', '96.00%']
  # mean 0.97, std 0.01, t(0.975, 2) * 0.01 / sqrt(3) = 2.48 pt.
  assert ('Over the 3 seeds the test accuracy is 97.00% +- 1.00 pt (sample std), 95% '
          'interval [94.52%, 99.48%], range 96.00% - 98.00%.') in results
  assert 'misclassified by replica 0 (seed 3) of 3 seeds; the first' in text
  assert 'These are the probabilities of replica 0 (seed 3) of 3 seeds' in text
  one = read(os.path.join(run_dir, html_page.REPORT))
  assert 'replica 0' not in one and 'These are the' not in one  # One seed: as before.
  assert '<table>' not in read(os.path.join(run_dir, html_page.REPORT)).split(
      '<h2>Results</h2>')[1].split('<h2>Configuration</h2>')[0]


def test_conclusions_find_overfitting_and_confusions():
  history = [{'epoch': e, 'loss': l, 'accuracy': 0.9, 'val_loss': v, 'val_accuracy': a,
              'seconds': 1.0}
             for e, l, v, a in ((1, 0.5, 0.40, 0.90), (2, 0.3, 0.30, 0.95),
                                (3, 0.2, 0.35, 0.94), (4, 0.25, 0.45, 0.93))]
  lowest, first, last = analysis.overfitting_start(history)
  assert (lowest['epoch'], first['epoch'], last['epoch']) == (2, 3, 4)
  assert analysis.overfitting_start(history[:2]) is None  # Lowest at the last epoch.
  cm = np.diag([50] * 10)
  cm[4, 9], cm[7, 1], cm[3, 5], cm[9, 4] = 7, 5, 5, 1
  names = [str(i) for i in range(10)]
  assert analysis.confused_pairs(cm, names) == [(7, '4', '9', 7 / 57), (5, '3', '5', 5 / 55),
                                              (5, '7', '1', 5 / 55)]
  res = {'class_names': names, 'test_accuracy': 0.9}
  text = ' '.join(analysis.conclusions({'res': res, 'history': history}, cm))
  assert 'Best epoch: epoch 2 of 4' in text
  assert ('Overfitting from epoch 3: validation loss was lowest at epoch 2 (0.3000) and '
          'stayed above it from then on, ending 0.1500 higher (+50%) at epoch 4, while '
          'training loss fell from 0.3000 to 0.2500.') in text
  assert 'true 4 predicted as 9: 7 times' in text
  assert '-3.00 percentage points' in text


def test_conclusions_without_validation():
  history = [{'epoch': 1, 'loss': 0.5, 'accuracy': 0.8, 'val_loss': math.nan,
              'val_accuracy': math.nan, 'seconds': 1.0}]
  res = {'class_names': [str(i) for i in range(10)], 'test_accuracy': 0.9}
  text = ' '.join(analysis.conclusions({'res': res, 'history': history},
                                       np.eye(10, dtype=int)))
  assert 'No validation split' in text and 'No test image was misclassified' in text


CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  document.body.dataset.images = String(imgs.length);
  document.body.dataset.imagesOk = String(imgs.length > 0 && imgs.every(
      function (i) { return i.complete && i.naturalWidth > 0; }));
  document.body.dataset.headings = Array.from(document.querySelectorAll('h2')).map(
      function (h) { return h.textContent; }).join('|');
});
</script></body>"""


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason='needs Chromium (apt-get install chromium)')
def test_report_renders_in_a_browser(run_dir, tmp_path):
  html_path = os.path.join(run_dir, html_page.REPORT)
  if not os.path.exists(html_path):
    run_report.write_run_report(run_dir)
  shot = tmp_path / 'shot.png'
  proc = chromium(f'--screenshot={shot}', '--window-size=1200,4000',
                   f'file://{html_path}', user_data_dir=tmp_path / 'profile1')
  assert shot.exists(), proc.stderr[-2000:]
  assert Image.open(shot).size == (1200, 4000)
  checked = tmp_path / 'checked.html'
  checked.write_text(read(html_path).replace('</body>', CHECK_SCRIPT), encoding='utf-8')
  proc = chromium('--dump-dom', '--virtual-time-budget=5000', f'file://{checked}',
                   user_data_dir=tmp_path / 'profile2')
  body = re.search(r'<body([^>]*)>', proc.stdout)
  assert body, proc.stderr[-2000:]
  attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
  assert attrs.get('images-ok') == 'true', attrs
  assert attrs['images'] == '5'
  assert tuple(attrs['headings'].split('|')) == HEADINGS
