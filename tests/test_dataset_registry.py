"""One record per dataset (input_pipeline.DATASETS): adding a dataset is one entry, and
everything else (loading, checksums, the console, results, the report and its pad,
predict) reads it from there."""

import dataclasses
import gzip
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from digits_jax import html_page
from digits_jax import idx
from digits_jax import input_pipeline as ip
from digits_jax import predict
from digits_jax import preprocess
from digits_jax import results as results_lib
from digits_jax import sweep
from helpers import REPO, TINY_FLAGS, config_flags, tiny_config, write_tiny_dataset

PATCH_NAMES = tuple(f'patch {k}' for k in range(10))


def md5s(folder):
  """{file stem: MD5 of the uncompressed file} of an IDX folder's four files."""
  out = {}
  for stems in idx.FILES.values():
    for stem in stems:
      with gzip.open(os.path.join(folder, stem + '.gz'), 'rb') as f:
        out[stem] = hashlib.md5(f.read()).hexdigest()
  return out


@pytest.fixture
def patches(tmp_path, monkeypatch):
  """A third dataset, registered by one entry: tiny synthetic IDX files of bright patches."""
  folder = write_tiny_dataset(str(tmp_path / 'patches'), seed=3)
  record = ip.Dataset(
      name='patches', title='Patches', subject='bright patches', item='a patch',
      class_names=PATCH_NAMES, folders=('/nonexistent/patches', folder),
      checksums=md5s(folder), tfds_name='', preparation='fashion',
      local_copy_hint='write them with tests/helpers.py')
  monkeypatch.setitem(ip.DATASETS, 'patches', record)
  monkeypatch.delenv(record.env_var, raising=False)
  return record


def test_every_record_is_complete():
  assert list(ip.DATASETS) == ['mnist', 'fashion_mnist']
  for name, record in ip.DATASETS.items():
    assert record.name == name and len(record.class_names) == idx.NUM_CLASSES
    assert set(record.checksums) == {s for stems in idx.FILES.values() for s in stems}
    assert record.preparation in preprocess.PREPARATIONS and record.tfds_name
    assert record.env_var == f'DIGITS_JAX_{name.upper()}_DIR'


def test_the_default_sweep_names_its_datasets():
  assert sweep.DEFAULT_DATASETS == 'mnist,fashion_mnist'


def test_a_registered_dataset_without_files_or_tfds_says_how_to_get_them(patches, tmp_path):
  config = tiny_config('', dataset='patches')
  ip.DATASETS['patches'] = dataclasses.replace(patches, folders=(str(tmp_path / 'none'),))
  with pytest.raises(idx.DataError, match=r'\$DIGITS_JAX_PATCHES_DIR'):
    ip.resolve_source(config)


def test_checksums_come_from_the_record(patches):
  ip.DATASETS['patches'] = dataclasses.replace(
      patches, checksums={**patches.checksums, 'train-images-idx3-ubyte': '0' * 32})
  config = tiny_config('', dataset='patches', verify_checksums=True)
  with pytest.raises(idx.DataError, match='differs from the patches file'):
    ip.load(config)


# The real entry point, in a process whose registry holds the third dataset's entry.
REGISTER_AND_RUN_MAIN = """
import json, os, runpy
from digits_jax import input_pipeline as ip
ip.DATASETS['patches'] = ip.Dataset(**json.loads(os.environ['PATCHES_RECORD']))
runpy.run_module('digits_jax.main', run_name='__main__', alter_sys=True)
"""


@pytest.mark.slow
def test_a_third_dataset_trains_reports_and_predicts_from_its_entry_alone(patches, tmp_path):
  workdir = str(tmp_path / 'run')
  record = json.dumps(dataclasses.asdict(patches))
  flags = config_flags(**{**TINY_FLAGS, 'verify_checksums': True, 'write_report': True})
  out = subprocess.run(
      [sys.executable, '-c', REGISTER_AND_RUN_MAIN, '--config=configs/default.py:patches',
       f'--workdir={workdir}', *flags], cwd=REPO, capture_output=True, text=True,
      timeout=300, check=False, env={**os.environ, 'PATCHES_RECORD': record,
                                     'TF_CPP_MIN_LOG_LEVEL': '3'})
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'Data: patches from IDX files in {patches.folders[1]}' in out.stdout
  res = results_lib.read_json(os.path.join(workdir, 'results.json'))
  assert res['dataset'] == 'patches' and res['class_names'] == list(PATCH_NAMES)
  assert res['test_accuracy'] > 0.5  # The patches are learnable.
  with open(os.path.join(workdir, html_page.REPORT), encoding='utf-8') as f:
    page = f.read()
  assert 'on Patches</title>' in page and 'images of bright patches from Patches' in page
  assert 'Draw a patch in the box.' in page and '"preparation":"fashion"' in page
  image = np.zeros((60, 60), np.uint8)
  image[10:40, 20:50] = 255  # A light patch on black, as the dataset's.
  path = str(tmp_path / 'patch.png')
  Image.fromarray(image).save(path)
  records, errors = predict.predict_files([path], workdir=workdir)
  assert not errors and records[0]['predicted_name'] in PATCH_NAMES
