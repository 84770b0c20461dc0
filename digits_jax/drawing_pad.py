"""The report's drawing pad: draw a digit (or a clothing item) and watch the network read it.

`html(workdir)` returns the section's HTML: a canvas for mouse, pen or finger, a clear
button, the 28x28 image the network sees and its probabilities as live bars. The page
runs everything itself, offline: digits_jax/assets/drawing_pad.js repeats
`digits_jax.preprocess` and the MLP's forward pass, with the trained weights embedded as
base64 float32 (about 5.3 bytes per parameter: 0.5 MB for the default, 3 MB for v9).
The script exposes `window.digitsJax.prepare(imageData)` (a canvas bitmap to 784 grey
levels, null when blank) and `window.digitsJax.predict(pixels)` (10 probabilities).

The page trusts nothing about the network: it carries its description (Dense layers and
config.activation) and NUM_CHECKS check images with the probabilities the model itself gives
them. On load the script runs its own forward pass on them (`window.digitsJax.selfCheck`);
beyond CHECK_TOLERANCE, or for an activation it does not implement, it shows a plain
warning instead of predictions. A model that is not an MLP gets a note instead of the pad.
"""

import base64
import html as html_lib
import importlib.resources
import json

import numpy as np

from digits_jax import checkpoint
from digits_jax import input_pipeline
from digits_jax import models
from digits_jax import preprocess
from digits_jax import train_state as ts

SCRIPT = 'assets/drawing_pad.js'  # Package data.
TITLE = 'Drawing pad'
# What the script needs of digits_jax.preprocess, named as the script names them.
CONSTANTS = {'size': preprocess.SIZE, 'digitBox': preprocess.DIGIT_BOX,
             'centre': preprocess.CENTRE, 'inkContrast': preprocess.INK_CONTRAST,
             'fashionNoise': preprocess.FASHION_NOISE, 'minStroke': preprocess.MIN_STROKE,
             'targetStroke': preprocess.TARGET_STROKE}
CSS = """<style>
.pad{display:flex;flex-wrap:wrap;gap:12px 36px;align-items:flex-start}
#pad-canvas{width:280px;height:280px;border:1px solid #bbb;border-radius:4px;cursor:crosshair;
 touch-action:none;display:block;margin-bottom:6px}
#pad-seen{width:112px;height:112px;image-rendering:pixelated;border:1px solid #bbb;display:block}
#pad-seen+p{max-width:116px;margin:4px 0}
#pad-bars .bar{width:180px}#pad-bars td.p{text-align:left}#pad-bars tr.best td{font-weight:bold}
#pad-bars tr.best .bar span{background:#2a9d8f}#pad-status{font-weight:bold}
</style>"""


NUM_CHECKS = 6  # Check images the page carries with Python's probabilities.
CHECK_TOLERANCE = 1e-3  # Largest |JS - Python| probability; float64 against float32: ~1e-6.


def layers(params):
  """The network's dense layers in order: [(kernel [in, out], bias [out])] as float32, or
  None when `params` is not a chain of Dense layers (a model the pad cannot run)."""
  try:
    dense = models.dense_layers(params)
  except (KeyError, TypeError):
    return None
  if len(dense) != len(params) or any(
      set(layer) != {'kernel', 'bias'} or np.ndim(layer['kernel']) != 2 for layer in dense):
    return None
  return [(np.asarray(layer['kernel'], np.float32), np.asarray(layer['bias'], np.float32))
          for layer in dense]


def _b64(array, dtype='<f4'):
  return base64.b64encode(np.ascontiguousarray(array, dtype).tobytes()).decode('ascii')


def check_images(count=NUM_CHECKS):
  """Fixed uint8 images that exercise the whole network (sparse strokes of varied ink, as
  the datasets' images are): the page's forward pass must reproduce Python's on them."""
  rng = np.random.default_rng(19)
  images = rng.integers(0, 256, (count, *models.INPUT_SHAPE)).astype(np.uint8)
  images[rng.random(images.shape) < 0.75] = 0
  return images


def checks(params, config):
  """The check images with the probabilities the model itself (models.create_model(config),
  as trained) gives them, through the program predict runs (train_state.predict)."""
  images = check_images()
  probs = np.asarray(ts.predict(ts.inference_state(config, params), images), np.float64)
  return [{'pixels': _b64(x.ravel(), 'u1'), 'probabilities': p.tolist()}
          for x, p in zip(images, probs)]


def model_json(params, config):
  """The model as the script reads it: dataset, its preparation (preprocess.PREPARATIONS),
  class names, constants, the network's description (kind, activation, layers) and the
  checks it must pass before predicting."""
  record = input_pipeline.dataset(config.dataset)
  return {'dataset': config.dataset, 'preparation': record.preparation,
          'classNames': list(record.class_names),
          'constants': CONSTANTS, 'kind': 'mlp', 'activation': config.activation,
          'layers': [{'in': k.shape[0], 'out': k.shape[1], 'kernel': _b64(k), 'bias': _b64(b)}
                     for k, b in layers(params)],
          'checks': checks(params, config), 'checkTolerance': CHECK_TOLERANCE}


def script():
  """The pad's JavaScript (package data)."""
  return importlib.resources.files('digits_jax').joinpath(SCRIPT).read_text(encoding='utf-8')


def _describe(params, config):
  """E.g. '784 -> 128 (relu) -> 10, softmax': the layers and activation the page runs."""
  widths = [k.shape[0] for k, _ in layers(params)] + [layers(params)[-1][0].shape[1]]
  return ' -> '.join(f'{w} ({config.activation})' if 0 < i < len(widths) - 1 else str(w)
                     for i, w in enumerate(widths)) + ', softmax'


def pad_html(params, config):
  """The pad's HTML for a run's network (its Flax params and config), or a paragraph saying
  plainly that the pad cannot run this model."""
  dataset = config.dataset
  if layers(params) is None:
    return ('<p>The drawing pad runs fully connected networks (MLPs) only, and this run\'s '
            'model is not one: it is not shown here. <code>python -m digits_jax.predict '
            '--workdir=RUN image.png</code> reads images with it.</p>')
  data = json.dumps(model_json(params, config), separators=(',', ':')).replace('</', '<\\/')
  record = input_pipeline.dataset(dataset)
  subject = record.item
  rows = ''.join(f'<tr data-class="{k}"><td class="l">{html_lib.escape(name)}</td>'
                 '<td class="p"><span class="bar"><span></span></span><span class="v"></span>'
                 '</td></tr>' for k, name in enumerate(record.class_names))
  empty = f'Draw {subject} in the box.'
  return (f'{CSS}<p>Draw {subject} with the mouse, a pen or a finger. The page prepares '
          'the drawing as the dataset\'s images were made (as <code>python -m '
          'digits_jax.predict</code> does for image files) and runs the trained network '
          f'on it, here in the browser. The network: {html_lib.escape(_describe(params, config))}.'
          '</p>'
          '<div class="pad"><div><canvas id="pad-canvas" width="280" height="280"></canvas>'
          '<button id="pad-clear" type="button">Clear</button></div>'
          '<div><canvas id="pad-seen" width="28" height="28"></canvas>'
          '<p class="sub">what the network sees (28x28)</p></div>'
          f'<div><p id="pad-status" data-empty="{html_lib.escape(empty)}">{empty}</p>'
          f'<table id="pad-bars">{rows}</table></div></div>'
          f'<script type="application/json" id="digits-jax-model">{data}</script>'
          f'<script>{script()}</script>')


def html(workdir):
  """The pad for the trained run in `workdir`, or a paragraph saying why there is none."""
  try:
    config, state = checkpoint.load_network(workdir)
  except Exception as e:  # pylint: disable=broad-except  (any unreadable checkpoint)
    return (f'<p>The drawing pad needs the run\'s trained weights, and they could not be '
            f'read from {html_lib.escape(workdir)}/{checkpoint.CHECKPOINT_DIR}/ '
            f'({html_lib.escape(type(e).__name__)}: {html_lib.escape(str(e)[:300])}).</p>')
  return pad_html(state.params, config)
