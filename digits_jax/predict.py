r"""Recognise your own images: `python -m digits_jax.predict --workdir=runs/v6_mnist IMAGE...`

Each image (PNG, JPEG, BMP, ... read with Pillow) is prepared as the run's dataset's images
were made (`digits_jax.preprocess`: a digit photographed on paper becomes light ink on
black, 20 px high, centred by its centre of mass) and given to the trained network. Per
image it prints the top-3 classes with their probabilities, or with --json one JSON
object; --out=DIR also writes one figure per image (original, the 28x28 the network saw,
the probabilities). An image that cannot be used (missing, not an image, blank) gets a
one-line error naming it; the others are still predicted, and the exit status is 1.

  python -m digits_jax.predict --workdir=runs/v6_mnist docs/handwritten_4.jpg --out=/tmp/p
"""

import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app
from absl import flags
from absl import logging
import numpy as np

from digits_jax import cli
from digits_jax import errors as errors_lib
from digits_jax import preprocess

TOP = 3
FIGURE_SUFFIX = '_prediction.png'


def load_network(workdir):
  """(dataset record, class names, predict_fn) of the trained run in `workdir`.

  predict_fn maps uint8 [B, 28, 28] to probabilities [B, 10].

  Raises:
    errors.MissingFileError: `workdir` holds no config.json.
    checkpoint.CheckpointError: it holds no intact checkpoint.
  """
  from digits_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from digits_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from digits_jax import train_state as ts  # pylint: disable=g-import-not-at-top
  config, state = checkpoint.load_network(workdir)
  record = input_pipeline.dataset(config.dataset)
  return (record, record.class_names,
          lambda images: np.asarray(ts.predict(state, images)))


def record(path, probabilities, class_names):
  """One image's result: its path, the predicted class, the top classes, all probabilities."""
  order = np.argsort(-probabilities, kind='stable')[:TOP]
  return {'image': path, 'predicted': int(order[0]), 'predicted_name': class_names[order[0]],
          'top': [{'class': int(k), 'name': class_names[k],
                   'probability': float(probabilities[k])} for k in order],
          'probabilities': [float(p) for p in probabilities]}


def line(rec):
  """`seven.jpg: 7 (98.71%)  3 (0.80%)  2 (0.31%)`."""
  return f'{rec["image"]}: ' + '  '.join(f'{t["name"]} ({t["probability"]:.2%})'
                                         for t in rec['top'])


def figure_paths(paths, out_dir):
  """<out_dir>/<name>_prediction.png per image; a repeated name gets _2, _3, ..."""
  seen, out = {}, []
  for path in paths:
    stem = os.path.splitext(os.path.basename(path))[0] or 'image'
    seen[stem] = seen.get(stem, 0) + 1
    name = stem if seen[stem] == 1 else f'{stem}_{seen[stem]}'
    out.append(os.path.join(out_dir, name + FIGURE_SUFFIX))
  return out


def read_all(paths, dataset):
  """{path: (original RGBA, prepared 28x28)} of the usable images, {path: error} of the
  others; `dataset` (an input_pipeline.Dataset) names the preparation."""
  ready, errors = {}, {}
  for path in paths:
    try:
      original = preprocess.read_image(path)
      ready[path] = (original, preprocess.prepare(original, dataset.preparation))
    except preprocess.ImageError as e:
      errors[path] = str(e)
  return ready, errors


def predict_files(paths, *, workdir, out_dir=''):
  """Predicts every usable image of `paths` with the run in `workdir`.

  Args:
    paths: image files.
    workdir: a trained run.
    out_dir: if not empty, where each image's figure goes.

  Returns:
    (records, errors): a record (see `record`) per usable image, in order, and
    {path: reason} for the others.
  """
  dataset, class_names, predict_fn = load_network(workdir)
  ready, errors = read_all(paths, dataset)
  probabilities = predict_fn(np.stack([p for _, p in ready.values()])) if ready else []
  records = [record(path, probs, class_names) for path, probs in zip(ready, probabilities)]
  if out_dir and records:
    errors.update(draw_figures(records, ready, paths, out_dir, class_names))
  return records, errors


def draw_figures(records, ready, paths, out_dir, class_names):
  """Draws each record's figure into `out_dir` (adding its 'figure'); returns {path: reason}
  of the images whose figure could not be written (their predictions stand)."""
  from digits_jax import figures  # pylint: disable=g-import-not-at-top  (matplotlib)
  failed = {}
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    return {rec['image']: f'--out: {errors_lib.os_error_line(e)}' for rec in records}
  figs = dict(zip(paths, figure_paths(paths, out_dir)))
  for rec in records:
    original, prepared = ready[rec['image']]
    try:
      figures.prediction(original, prepared, rec['probabilities'], class_names,
                         figs[rec['image']], os.path.basename(rec['image']))
      rec['figure'] = figs[rec['image']]
    except OSError as e:
      failed[rec['image']] = f'its figure: {errors_lib.os_error_line(e)}'
  return failed


def main(argv):
  """Prints each image's prediction (or error); exit status 1 if any image failed."""
  paths = argv[1:]
  if not paths:
    sys.exit('error: name at least one image file, e.g. python -m digits_jax.predict '
             '--workdir=runs/v6_mnist docs/handwritten_4.jpg.')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs at INFO.
  args = flags.FLAGS
  with cli.one_line(args.workdir):
    records, errors = predict_files(paths, workdir=args.workdir, out_dir=args.out)
  by_path = {rec['image']: rec for rec in records}
  for path in paths:
    if path in by_path:
      print(json.dumps(by_path[path]) if args.json else line(by_path[path]), flush=True)
    if path in errors:
      print(f'error: {path}: {errors[path]}', file=sys.stderr, flush=True)
      if args.json and path not in by_path:
        print(json.dumps({'image': path, 'error': errors[path]}))
  sys.exit(1 if errors else 0)


if __name__ == '__main__':
  # Defined here, not on import: main.py owns --workdir where both are imported.
  flags.DEFINE_string('workdir', None, 'A trained run (config.json and checkpoints/).',
                      required=True)
  flags.DEFINE_string('out', '', 'If set, write <image name>_prediction.png here per image.')
  flags.DEFINE_bool('json', False, 'Print one JSON object per image instead of text.')
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, __doc__))
