"""`python -m digits_jax.report --workdir=PARENT` compares the runs under PARENT."""

import contextlib
import csv
import io
import os
import re
import subprocess
import sys

import pytest

from helpers import REPO, tiny_config
from digits_jax import train


@pytest.fixture(scope='module')
def parent(tiny_data, tmp_path_factory):
  """Two runs of the default config at other learning rates, in folders of their own."""
  folder = tmp_path_factory.mktemp('runs')
  for name, lr in (('lr_1e-3', 1e-3), ('lr_3e-3', 3e-3)):
    with contextlib.redirect_stdout(io.StringIO()):
      train.train_and_evaluate(tiny_config(tiny_data, learning_rate=lr), str(folder / name))
  proc = subprocess.run([sys.executable, '-m', 'digits_jax.report', f'--workdir={folder}'],
                        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == str(folder / 'report.html')
  return folder


@pytest.mark.slow
def test_rows_are_labelled_by_folder_with_the_fields_that_differ(parent):
  with open(parent / 'comparison.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert [(r['run'], r['variant'], r['differs']) for r in rows] == [
      ('lr_1e-3', 'default', 'learning_rate=0.001'),
      ('lr_3e-3', 'default', 'learning_rate=0.003')]


@pytest.mark.slow
def test_the_page_names_runs_by_folder(parent):
  with open(parent / 'report.html', encoding='utf-8') as f:
    page = f.read()
  cells = re.findall(r'<a href="(lr_[^"/]+)/report.html">([^<]+)</a>', page) or re.findall(
      r'<td[^>]*>(lr_[^<]+)</td>', page)
  assert {c[-1] if isinstance(c, tuple) else c for c in cells} >= {'lr_1e-3', 'lr_3e-3'}
  assert 'learning_rate=0.001' in page and 'learning_rate=0.003' in page
  conclusions = page.split('Conclusions', 2)[-1]
  assert 'lr_1e-3' in conclusions or 'lr_3e-3' in conclusions
  assert not re.search(r'\bby default\b', conclusions)  # Not the ambiguous variant name.
