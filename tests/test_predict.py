"""Recognising image files (`python -m digits_jax.predict`) and the report's drawing pad.

The round trip and the browser checks use the default config trained on the real MNIST
(10 epochs, about 20 s here; skipped without a local MNIST IDX folder, which CI provides);
the bad inputs use the tiny dataset of tests/helpers.py. The browser checks need Chromium.
"""

import base64
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from digits_jax import config_files
from digits_jax import drawing_pad
from digits_jax import idx
from digits_jax import input_pipeline
from digits_jax import optimizers
from digits_jax import predict
from digits_jax import preprocess
from digits_jax import html_page
from digits_jax import results
from digits_jax import train
from digits_jax import train_state as ts
from digits_jax.checkpoint import load_network
from helpers import BROWSER, REPO, chromium, tiny_config

needs_browser = pytest.mark.skipif(BROWSER is None,
                                   reason='needs Chromium (apt-get install chromium)')


def quiet_train(config, workdir):
  with contextlib.redirect_stdout(io.StringIO()):
    train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def mnist_run(tmp_path_factory):
  """(workdir, test images, state): the default config trained on the real MNIST.

  All 10 epochs, not 1: a network that is sure of more test images flips fewer of them on
  the round trip (on 1,000 images: 98.9% agree after 10 epochs, 98.5% after 1).
  """
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update(dict(progress_bar=False, tensorboard=False, write_report=True,
                     data_source='idx'))
  try:
    input_pipeline.resolve_source(config)
  except idx.DataError:
    pytest.skip(f'no local MNIST IDX folder: set ${input_pipeline.DATASETS["mnist"].env_var}')
  workdir = quiet_train(config, str(tmp_path_factory.mktemp('mnist') / 'run'))
  _, state = load_network(workdir)  # Replica 0, the network predict uses.
  return workdir, input_pipeline.load(config).test_images, state


@pytest.fixture(scope='module')
def tiny_run(tiny_data, tmp_path_factory):
  """A trained run on the tiny dataset (report written)."""
  return quiet_train(tiny_config(tiny_data, write_report=True),
                     str(tmp_path_factory.mktemp('tiny') / 'run'))


def on_paper(image, rng):
  """A 28x28 test image as dark ink on white paper: 8-12x larger, off-centre, with margins."""
  scale = int(rng.integers(8, 13))
  big = Image.fromarray(255 - image).resize((28 * scale, 28 * scale), Image.BILINEAR)
  width, height = 28 * scale + int(rng.integers(60, 240)), 28 * scale + int(rng.integers(60, 240))
  sheet = Image.new('RGB', (width, height), (250, 248, 240))
  sheet.paste(big.convert('RGB'), (int(rng.integers(10, width - 28 * scale - 10)),
                                   int(rng.integers(10, height - 28 * scale - 10))))
  return sheet


@pytest.mark.slow
@pytest.mark.parametrize('fmt', ['png', 'jpg'])
def test_round_trip_of_test_images_drawn_on_paper(mnist_run, tmp_path, fmt):
  workdir, test_images, state = mnist_run
  rng = np.random.default_rng(0)
  chosen = rng.choice(len(test_images), 20, replace=False)
  paths = []
  for k, i in enumerate(chosen):
    paths.append(str(tmp_path / f'{k}.{fmt}'))
    on_paper(test_images[i], rng).save(paths[-1])
  records, errors = predict.predict_files(paths, workdir=workdir)
  assert not errors
  original = np.asarray(ts.predict(state, test_images[chosen])).argmax(1)
  agree = sum(r['predicted'] == o for r, o in zip(records, original))
  assert agree >= 19, (agree, [r['predicted'] for r in records], original)


def page_with_checks(report_html, tmp_path, script):
  """The report with `script` run on load; its JSON result goes into <pre id="result">."""
  check = ('<pre id="result"></pre><script>window.addEventListener("load", async () => {'
           'let out; try { out = await (async () => {' + script + '})(); }'
           ' catch (e) { out = {error: String(e && e.stack || e)}; }'
           'document.getElementById("result").textContent = JSON.stringify(out); });'
           '</script></body>')
  path = tmp_path / 'check.html'
  path.write_text(report_html.replace('</body>', check), encoding='utf-8')
  return path


def run_in_browser(report_html, tmp_path, script):
  """Runs `script` (an async function body returning JSON-able data) in the report."""
  path = page_with_checks(report_html, tmp_path, script)
  proc = chromium('--dump-dom', '--virtual-time-budget=20000', f'file://{path}',
                  user_data_dir=tmp_path / 'profile')
  found = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.S)
  assert found and found.group(1), proc.stderr[-2000:]
  out = json.loads(found.group(1).replace('&quot;', '"').replace('&amp;', '&')
                   .replace('&lt;', '<').replace('&gt;', '>'))
  assert 'error' not in out, out
  return out


# Canvas bitmaps to prepare in the browser: strokes drawn on the pad (as a user would, by
# pointer events), thin strokes, and a test image drawn on paper (a PNG, scaled).
DRAWINGS = """
const pad = document.getElementById('pad-canvas'), r = pad.getBoundingClientRect();
const ctx = pad.getContext('2d');
const ev = (type, p) => pad.dispatchEvent(new PointerEvent(type, {clientX: r.left + p[0] *
    r.width / pad.width, clientY: r.top + p[1] * r.height / pad.height, pointerId: 1}));
const draw = (points) => { ev('pointerdown', points[0]); points.slice(1).forEach(
    (p) => ev('pointermove', p)); ev('pointerup', points[points.length - 1]); };
const grab = () => ctx.getImageData(0, 0, pad.width, pad.height);
const b64 = (d) => { let s = ''; for (let i = 0; i < d.length; i += 8192)
    s += String.fromCharCode.apply(null, d.subarray(i, i + 8192)); return btoa(s); };
const bitmaps = [];
document.getElementById('pad-clear').click();
draw([[90, 60], [190, 60], [175, 100], [140, 170], [125, 240]]);
bitmaps.push(grab());
document.getElementById('pad-clear').click();
draw([[140, 40], [110, 90], [100, 160], [130, 230], [175, 200], [170, 140], [115, 150]]);
bitmaps.push(grab());
document.getElementById('pad-clear').click();
ctx.lineWidth = 3; ctx.strokeStyle = '#223'; ctx.beginPath(); ctx.arc(140, 130, 70, 0, 6.3);
ctx.stroke();
bitmaps.push(grab());
const img = new Image(); img.src = PAPER; await img.decode();
ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, pad.width, pad.height);
ctx.drawImage(img, 17, 41, 230, 200);
bitmaps.push(grab());
const drawings = bitmaps.map((b) => ({width: b.width, height: b.height, rgba: b64(b.data),
    digit: window.digitsJax.prepare(b, 'digit'),
    fashion: window.digitsJax.prepare(b, 'fashion')}));
"""


@pytest.mark.slow
@needs_browser
def test_the_pad_predicts_and_prepares_as_python(mnist_run, tmp_path):
  workdir, test_images, state = mnist_run
  images = test_images[:10]
  rng = np.random.default_rng(0)
  buf = io.BytesIO()
  on_paper(test_images[10], rng).save(buf, format='PNG')
  paper = 'data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode('ascii')
  script = (f'const PAPER = "{paper}";\n'
            f'const predicted = {json.dumps(images.tolist())}.map(window.digitsJax.predict);\n'
            + DRAWINGS + 'return {predicted, drawings};')
  with open(os.path.join(workdir, html_page.REPORT), encoding='utf-8') as f:
    out = run_in_browser(f.read(), tmp_path, script)
  # (b) The forward pass: the same probabilities as train_state.predict.
  expected = np.asarray(ts.predict(state, images))
  assert np.abs(np.asarray(out['predicted']) - expected).max() < 1e-4
  # (c) The preparation: the same 28x28 as digits_jax.preprocess, of the same bitmap.
  assert len(out['drawings']) == 4
  for drawing in out['drawings']:
    rgba = np.frombuffer(base64.b64decode(drawing['rgba']), np.uint8).reshape(
        drawing['height'], drawing['width'], 4)
    for key in preprocess.PREPARATIONS:
      python = preprocess.prepare(rgba, key).astype(int)
      js = np.asarray(drawing[key]).reshape(28, 28)
      assert (np.abs(js - python) <= 1).mean() >= 0.99, key
      assert python.max() > 100  # Something was drawn (a thin line stays faint as fashion).
  # The pad's own reading of the drawn '7' is the network's reading of Python's preparation.
  first = out['drawings'][0]
  assert expected.shape == (10, 10)
  probs = np.asarray(ts.predict(state, np.asarray(first['digit'], np.uint8).reshape(1, 28, 28)))
  assert probs.argmax() == 7


def test_the_report_embeds_the_pad_with_the_weights(tiny_run):
  with open(os.path.join(tiny_run, html_page.REPORT), encoding='utf-8') as f:
    text = f.read()
  assert '<canvas id="pad-canvas"' in text and 'window.digitsJax' in text
  model = json.loads(re.search(r'<script type="application/json" id="digits-jax-model">'
                               r'(.*?)</script>', text, re.S).group(1))
  _, state = load_network(tiny_run)
  kernel = np.frombuffer(base64.b64decode(model['layers'][0]['kernel']), '<f4')
  np.testing.assert_array_equal(kernel, np.asarray(state.params['dense_0']['kernel']).ravel())
  assert [(l['in'], l['out']) for l in model['layers']] == [(784, 16), (16, 10)]
  assert model['constants']['digitBox'] == preprocess.DIGIT_BOX


def test_the_report_says_why_without_a_checkpoint(tiny_run, tmp_path):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(tiny_run, workdir, ignore=shutil.ignore_patterns('checkpoints'))
  text = drawing_pad.html(workdir)
  assert 'needs the run' in text and 'checkpoints/' in text and '<canvas' not in text


def run_predict(*args):
  return subprocess.run([sys.executable, '-m', 'digits_jax.predict', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})


@pytest.mark.slow  # Runs `predict` in subprocesses: seconds each.
def test_bad_images_get_one_line_each_and_the_others_are_still_predicted(tiny_run, tmp_path):
  good = tmp_path / 'good.png'
  Image.fromarray(np.pad(np.full((40, 30), 20, np.uint8), 60, constant_values=240)).save(good)
  text = tmp_path / 'notes.png'
  text.write_text('not an image')
  blank = tmp_path / 'blank.jpg'
  Image.new('RGB', (64, 48), (250, 250, 245)).save(blank)
  missing = tmp_path / 'missing.png'
  out_dir = tmp_path / 'figures'
  proc = run_predict(f'--workdir={tiny_run}', str(missing), str(good), str(text), str(blank),
                     f'--out={out_dir}', '--json')
  assert proc.returncode == 1, proc.stderr
  errors = proc.stderr.strip().splitlines()
  assert [e.split(': ')[1] for e in errors] == [str(missing), str(text), str(blank)], errors
  assert 'no such file' in errors[0] and 'not an image' in errors[1] and 'blank' in errors[2]
  assert 'Traceback' not in proc.stderr
  lines = [json.loads(l) for l in proc.stdout.splitlines()]
  assert [l['image'] for l in lines] == [str(missing), str(good), str(text), str(blank)]
  result = lines[1]
  assert sum(result['probabilities']) == pytest.approx(1, abs=1e-5)
  assert [t['class'] for t in result['top']][0] == result['predicted']
  assert os.listdir(out_dir) == ['good_prediction.png']
  assert Image.open(out_dir / 'good_prediction.png').size[0] > 500


@pytest.mark.slow  # Runs `predict` in subprocesses: seconds each.
def test_text_output_and_a_bad_workdir(tiny_run, tmp_path):
  good = tmp_path / 'seven.png'
  Image.fromarray(np.pad(np.full((40, 30), 20, np.uint8), 60, constant_values=240)).save(good)
  proc = run_predict(f'--workdir={tiny_run}', str(good))
  assert proc.returncode == 0, proc.stderr
  assert re.fullmatch(rf'{re.escape(str(good))}: (\d \(\d+\.\d\d%\)  ){{2}}\d \(\d+\.\d\d%\)\n',
                      proc.stdout), proc.stdout
  untrained = tmp_path / 'untrained'
  shutil.copytree(tiny_run, untrained, ignore=shutil.ignore_patterns('checkpoints'))
  for workdir in (tmp_path / 'nothing', untrained):
    proc = run_predict(f'--workdir={workdir}', str(good))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f'error: {workdir} holds no '), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert 'python -m digits_jax.main' in proc.stderr


@pytest.fixture(scope='module')
def sgd_run(tiny_data, tmp_path_factory):
  """A run trained with a non-default optimizer and dropout (report written)."""
  config = tiny_config(tiny_data, optimizer='sgd', learning_rate=0.05, momentum=0.9,
                       dropout_rate=0.2, write_report=True)
  return quiet_train(config, str(tmp_path_factory.mktemp('sgd') / 'run'))


def test_a_run_of_another_optimizer_reads_back_without_building_an_optimizer(
    sgd_run, tiny_data, monkeypatch):
  def no_optimizer(*args):
    raise AssertionError(f'an optimizer was built to load weights: {args}')
  monkeypatch.setattr(optimizers, 'build', no_optimizer)
  config, state = load_network(sgd_run)
  assert config.optimizer == 'sgd' and state.tx is None and state.opt_state is None
  images, _ = idx.load_split(tiny_data, 'test')
  probs = np.asarray(ts.predict(state, images))  # Deterministic: no dropout at inference.
  np.testing.assert_allclose(probs, results.read_predictions(sgd_run)['probabilities'],
                             rtol=1e-5, atol=1e-6)
  with open(os.path.join(sgd_run, html_page.REPORT), encoding='utf-8') as f:
    assert '<canvas id="pad-canvas"' in f.read()  # The report's pad loaded it too.


def test_predict_reads_a_run_of_another_optimizer(sgd_run, tmp_path):
  good = tmp_path / 'seven.png'
  Image.fromarray(np.pad(np.full((40, 30), 20, np.uint8), 60, constant_values=240)).save(good)
  proc = run_predict(f'--workdir={sgd_run}', str(good), '--json')
  assert proc.returncode == 0, proc.stderr
  assert sum(json.loads(proc.stdout)['probabilities']) == pytest.approx(1, abs=1e-5)


def test_a_saved_config_without_the_newer_fields_reads_with_their_defaults(tiny_run, tmp_path):
  workdir = str(tmp_path / 'old')
  shutil.copytree(tiny_run, workdir)
  path = os.path.join(workdir, 'config.json')
  with open(path) as f:
    saved = json.load(f)
  newer = ('dropout_rate', 'momentum', 'nesterov', 'weight_decay', 'num_seeds')
  with open(path, 'w') as f:
    json.dump({k: v for k, v in saved.items() if k not in newer}, f)
  assert config_files.added_fields(results.read_json(path)) == sorted(newer)
  config, state = load_network(workdir)
  assert (config.dropout_rate, config.momentum, config.num_seeds) == (0.0, 0.0, 1)
  assert config.hidden_units == saved['hidden_units']
  _, want = load_network(tiny_run)
  np.testing.assert_array_equal(state.params['dense_0']['kernel'],
                                want.params['dense_0']['kernel'])
