"""The drawing pad's contract: the page carries the network's description and check images
with Python's probabilities, runs its own forward pass on them on load, and shows a plain
warning instead of predictions when they disagree (or the network is one it cannot run)."""

import json
import re

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import default
from digits_jax import drawing_pad
from digits_jax import models
from digits_jax import train_state as ts
from helpers import BROWSER
from test_predict import run_in_browser

needs_browser = pytest.mark.skipif(BROWSER is None, reason='needs chromium')


def _config(**kw):
  config = default.get_config()
  config.update(dict(hidden_units=24, num_hidden_layers=2, **kw))
  return config


def _params(config):
  """Initial parameters, scaled so that the activations matter (as trained ones do)."""
  params = ts.create_train_state(config, jax.random.key(3)).params
  return jax.tree.map(lambda x: 3 * x + 0.05, params)


def _page(params, config):
  return f'<html><body>{drawing_pad.pad_html(params, config)}</body></html>'


def _model_json(page):
  return json.loads(re.search(r'<script type="application/json" id="digits-jax-model">'
                              r'(.*?)</script>', page, re.S).group(1))


def test_the_page_carries_the_description_and_pythons_probabilities():
  config = _config(activation='tanh')
  params = _params(config)
  model = _model_json(_page(params, config))
  assert (model['kind'], model['activation']) == ('mlp', 'tanh')
  assert [(l['in'], l['out']) for l in model['layers']] == [(784, 24), (24, 24), (24, 10)]
  assert len(model['checks']) == drawing_pad.NUM_CHECKS
  want = ts.predict(ts.create_train_state(config, jax.random.key(3)).replace(params=params),
                    drawing_pad.check_images())
  np.testing.assert_allclose([c['probabilities'] for c in model['checks']], want, atol=1e-7)
  assert '784 -&gt; 24 (tanh) -&gt; 24 (tanh) -&gt; 10, softmax' in _page(params, config)


def test_a_model_that_is_not_an_mlp_gets_a_plain_note():
  config = _config()
  cnn = {'conv_0': {'kernel': np.zeros((3, 3, 1, 8)), 'bias': np.zeros(8)},
         'dense_0': {'kernel': np.zeros((8, 10)), 'bias': np.zeros(10)}}
  text = drawing_pad.pad_html(cnn, config)
  assert 'runs fully connected networks (MLPs) only' in text and '<canvas' not in text


def _in_browser(page, tmp_path):
  """The pad's self-check verdict, its status line after drawing a stroke, and whether it
  showed any probability."""
  script = """
  const pad = document.getElementById('pad-canvas'), r = pad.getBoundingClientRect();
  const ev = (type, y) => pad.dispatchEvent(new PointerEvent(type, {clientX: r.left + r.width
      / 2, clientY: r.top + y * r.height / pad.height, pointerId: 1}));
  ev('pointerdown', 40); [90, 140, 190, 240].forEach((y) => ev('pointermove', y));
  ev('pointerup', 240);
  const status = document.getElementById('pad-status');
  for (let i = 0; i < 100 && status.textContent === status.dataset.empty; i++) {
    await new Promise((done) => setTimeout(done, 20));
  }
  const shown = Array.from(document.querySelectorAll('#pad-bars .v')).map((e) => e.textContent);
  return {check: window.digitsJax.selfCheck, status: status.textContent,
          shown: shown.filter((t) => t !== '').length};
  """
  return run_in_browser(page, tmp_path, script)


@pytest.mark.slow  # One headless Chromium per activation, ~3 s each.
@needs_browser
@pytest.mark.parametrize('activation', sorted(models.ACTIVATIONS))
def test_the_pad_runs_every_registered_activation(activation, tmp_path):
  config = _config(activation=activation)
  out = _in_browser(_page(_params(config), config), tmp_path)
  assert out['check']['ok'] and out['check']['maxDiff'] < 1e-5, out
  assert out['status'].startswith('The network reads: ') and out['shown'] == 10, out


@needs_browser
def test_a_wrong_activation_shows_a_warning_instead_of_predictions(tmp_path, monkeypatch):
  config = _config()  # Says relu...
  params = _params(config)
  monkeypatch.setitem(models.ACTIVATIONS, 'relu', nn.tanh)  # ...but models.py was edited.
  out = _in_browser(_page(params, config), tmp_path)
  assert not out['check']['ok'] and out['check']['maxDiff'] > 1e-2, out
  assert out['status'].startswith("Warning: this page's copy of the network disagrees with "
                                  'Python on its check images'), out
  assert out['shown'] == 0, out


@pytest.mark.slow
@needs_browser
def test_an_activation_the_page_does_not_know_is_said_plainly(tmp_path, monkeypatch):
  monkeypatch.setitem(models.ACTIVATIONS, 'swish', nn.swish)  # A new registry entry.
  config = _config(activation='swish')
  out = _in_browser(_page(_params(config), config), tmp_path)
  assert out['check'] == {'ok': False, 'maxDiff': None, 'reason': (
      'This page cannot run this network (mlp, activation swish): it runs MLPs with relu, '
      'tanh, sigmoid, gelu. Use python -m digits_jax.predict.')}
  assert out['status'] == out['check']['reason'] and out['shown'] == 0
