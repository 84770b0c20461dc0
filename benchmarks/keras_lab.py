r"""The lab's own Keras 3 program (TensorFlow backend), timed: the baseline digits_jax beats.

  python benchmarks/keras_lab.py --config=v6 --dataset=mnist --data_dir=/path/to/mnist
  python benchmarks/keras_lab.py --config=v6 --seeds=0,1,2

Builds exactly the network, data and training of the lab for one of our configs
(configs/<name>.py, so the same variant is compared), then prints ONE JSON line per seed
(--seeds, default the config's seed; each seed trains a fresh model in this process after
`keras.utils.set_random_seed(seed)`):

  program, config, dataset, seed, epochs   what ran (benchmark.py --keras_results reads these).

  import_seconds    importing TensorFlow and Keras.
  startup_seconds   build + compile + a 1-step warm-up fit of a throwaway model on a
                    tiny slice: the fixed cost Keras pays before its first real batch.
  train_seconds     the `model.fit` call (all epochs, validation included).
  epoch_seconds     each epoch's seconds (validation included), from a callback.
  examples_per_second  training examples per second (num_train * epochs / train_seconds).
  test_accuracy, test_loss  `model.evaluate` on the test set.
  peak_rss_mb       peak resident memory of this process (getrusage ru_maxrss).
"""

import argparse
import importlib
import json
import os
import resource
import sys
import time

_START = time.perf_counter()
os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from digits_jax import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='default', help='configs/<name>.py, e.g. v6.')
  parser.add_argument('--dataset', default='mnist', choices=input_pipeline.DATASETS)
  parser.add_argument('--data_dir', default='', help="IDX folder ('' = the config's lookup).")
  parser.add_argument('--epochs', type=int, default=0, help="Override (0 = the config's).")
  parser.add_argument('--seeds', type=seed_list, default=None,
                      help="Comma-separated seeds, one run each (default: the config's seed).")
  return parser.parse_args(argv)


def seed_list(text):
  """'0,1,2' -> [0, 1, 2]; argparse turns the ValueError into one clear usage line."""
  seeds = [int(s) for s in text.split(',') if s.strip()]
  if not seeds or any(s < 0 for s in seeds):
    raise ValueError(text)
  return seeds


def load_config(name, dataset, data_dir='', epochs=0):
  """configs/<name>.py's get_config(dataset), with the benchmark's overrides."""
  config = importlib.import_module(f'configs.{name}').get_config(dataset)
  if data_dir:
    config.data_dir = data_dir
  if epochs:
    config.num_epochs = epochs
  return config


def load_data(config):
  """The full 60k training set and the test set as the lab prepares them (/255, one-hot).

  Uses the package's loader with validation_split 0 (so nothing is cut off): Keras's
  own `validation_split` in `fit` then holds out the last fraction, as in the lab.
  """
  import keras  # pylint: disable=g-import-not-at-top
  whole = config.copy_and_resolve_references()
  whole.validation_split = 0.0
  data = input_pipeline.load(whole)
  prep = lambda x: x.astype(np.float32) / 255.0
  onehot = lambda y: keras.utils.to_categorical(y, 10)
  return ((prep(data.train_images), onehot(data.train_labels)),
          (prep(data.test_images), onehot(data.test_labels)))


def build_model(config):
  """The lab's Sequential network, compiled with Adam and categorical cross-entropy."""
  import keras  # pylint: disable=g-import-not-at-top
  layers = [keras.Input((28, 28)), keras.layers.Flatten()]
  layers += [keras.layers.Dense(config.hidden_units, activation='relu')
             for _ in range(config.num_hidden_layers)]
  layers.append(keras.layers.Dense(10, activation='softmax'))
  model = keras.Sequential(layers)
  # Identical to optimizer='adam' under the configs' (Keras-default) hyper-parameters.
  optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate, beta_1=config.b1,
                                    beta_2=config.b2, epsilon=config.eps)
  model.compile(optimizer=optimizer, loss='categorical_crossentropy', metrics=['accuracy'])
  return model


def epoch_timer():
  """A Keras callback recording each epoch's seconds (validation included) in `.seconds`."""
  import keras  # pylint: disable=g-import-not-at-top

  class EpochTimer(keras.callbacks.Callback):

    def __init__(self):
      super().__init__()
      self.seconds, self._start = [], 0.0

    def on_epoch_begin(self, epoch, logs=None):
      self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      self.seconds.append(time.perf_counter() - self._start)

  return EpochTimer()


def run(config):
  """Trains and evaluates the lab's Keras model; returns the measurements (a dict)."""
  t0 = time.perf_counter()
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import_seconds = time.perf_counter() - t0
  keras.utils.set_random_seed(config.seed)
  (x_train, y_train), (x_test, y_test) = load_data(config)

  t0 = time.perf_counter()  # Fixed cost: build, compile, trace, one step (thrown away).
  warm = build_model(config)
  warm.fit(x_train[:config.batch_size], y_train[:config.batch_size],
           batch_size=config.batch_size, epochs=1, verbose=0)
  startup_seconds = time.perf_counter() - t0
  del warm

  keras.utils.set_random_seed(config.seed)
  model = build_model(config)
  timer = epoch_timer()
  t0 = time.perf_counter()
  history = model.fit(x_train, y_train, batch_size=config.batch_size,
                      epochs=config.num_epochs, validation_split=config.validation_split,
                      callbacks=[timer], verbose=0)
  train_seconds = time.perf_counter() - t0
  test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
  num_train = input_pipeline.split_at(len(x_train), config.validation_split)
  return {
      'program': 'keras', 'config': config.name, 'dataset': config.dataset,
      'seed': config.seed,
      'epochs': config.num_epochs,
      'batch_size': config.batch_size, 'num_train': num_train,
      'steps': input_pipeline.steps_per_epoch(num_train, config.batch_size) * config.num_epochs,
      'import_seconds': import_seconds, 'startup_seconds': startup_seconds,
      'train_seconds': train_seconds, 'epoch_seconds': timer.seconds,
      'examples_per_second': num_train * config.num_epochs / train_seconds,
      'test_accuracy': float(test_accuracy), 'test_loss': float(test_loss),
      'final_val_accuracy': float(history.history['val_accuracy'][-1]),
      'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      'process_seconds': time.perf_counter() - _START,
      'keras': keras.__version__, 'tensorflow': tf.__version__,
  }


def main(argv=None):
  args = parse_args(argv)
  config = load_config(args.config, args.dataset, args.data_dir, args.epochs)
  for seed in args.seeds or [config.seed]:
    config.seed = seed
    print(json.dumps(run(config)), flush=True)


if __name__ == '__main__':
  main()
