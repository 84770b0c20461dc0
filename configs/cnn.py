r"""The next lesson after the lab: a small CNN (conv 32-64, dense 128) on the same data.

  python -m digits_jax.main --config=configs/cnn.py
  python -m digits_jax.main --config=configs/cnn.py:fashion_mnist

Test accuracy (3 seeds, measured on CPU): MNIST TBD.
"""

from configs import default


def get_config(dataset=None):
  """The default config with config.model='cnn' and what a CNN trains best with."""
  config = default.get_config(dataset)
  config.name = 'cnn'
  config.model = 'cnn'
  config.cnn.features = (32, 64)
  config.cnn.dense_units = 128
  config.num_epochs = 3
  config.num_seeds = 3
  return config
