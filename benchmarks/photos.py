"""Accuracy on synthetic photos in bad light, before and after a change to preprocess.

  python benchmarks/photos.py N OLD_DIR WORKDIR

N test digits per kind of photo (tests/test_preprocess.py's `photo_cases`), prepared by
OLD_DIR/preprocess_old.py (e.g. `git show cabb445:digits_jax/preprocess.py`) and by
digits_jax.preprocess, read by WORKDIR's trained network. Prints a markdown table.
Run from the repository root (it imports the tests' photo generator).
"""

import sys

import numpy as np

sys.path[:0] = ['tests', sys.argv[2]]

import preprocess_old  # pylint: disable=g-import-not-at-top,wrong-import-position
import test_preprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
from digits_jax import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from digits_jax import preprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
from digits_jax import train_state as ts  # pylint: disable=g-import-not-at-top,wrong-import-position
from digits_jax.checkpoint import load_network  # pylint: disable=g-import-not-at-top,wrong-import-position


def accuracy(module, photos, labels, state):
  """The share of `photos` that `module.prepare_digit` and `state` read as `labels`."""
  prepared = []
  for photo in photos:
    try:
      prepared.append(module.prepare_digit(photo))
    except module.ImageError:  # Read as blank: counts as wrong.
      prepared.append(np.zeros((28, 28), np.uint8))
  return np.mean(np.asarray(ts.predict(state, np.stack(prepared))).argmax(1) == labels)


def main(n, workdir):
  config, state = load_network(workdir)
  data = input_pipeline.load(config)
  chosen = np.random.default_rng(1).choice(len(data.test_images), n, replace=False)
  images, labels = data.test_images[chosen], data.test_labels[chosen]
  original = np.mean(np.asarray(ts.predict(state, images)).argmax(1) == labels)
  print(f'| photos (n={n} each) | before | after |\n|---|---|---|\n'
        f'| the 28x28 originals | {original:.1%} | {original:.1%} |')
  for k, (name, light, pen) in enumerate(test_preprocess.photo_cases()):
    photos, truth = test_preprocess.photos_of(images, labels, light, pen, seed=k)
    print(f'| {name} | {accuracy(preprocess_old, photos, truth, state):.1%} | '
          f'{accuracy(preprocess, photos, truth, state):.1%} |', flush=True)


if __name__ == '__main__':
  main(int(sys.argv[1]), sys.argv[3])
