r"""The lab's worked example: one hidden layer of 128, 10 epochs, batch 32, 20% validation.

  python -m digits_jax.main --config=configs/default.py
  python -m digits_jax.main --config=configs/default.py:fashion_mnist

Test accuracy (seed 0, measured on CPU): MNIST 97.86%, Fashion-MNIST 87.16%.
Every variant file imports this one and overrides only what differs.
"""

import ml_collections


def get_config(dataset=None):
  """Returns the default config; `dataset` is the optional `:arg` of --config."""
  config = ml_collections.ConfigDict()
  config.name = 'default'  # Variant name: used in results and the default workdir.

  # Data.
  config.dataset = dataset or 'mnist'  # 'mnist' (Task 1) or 'fashion_mnist' (Task 2).
  config.data_source = 'auto'  # 'auto' (IDX folder if found, else tfds), 'idx' or 'tfds'.
  config.data_dir = ''  # IDX folder; '' = $DIGITS_JAX_<DATASET>_DIR, then known folders.
  config.verify_checksums = True  # Check known IDX files against their canonical MD5s.
  config.validation_split = 0.2  # Last fraction of the training set held out (Keras).

  # Model.
  config.model = 'mlp'  # Network (models.MODELS): 'mlp', the lab's, or 'cnn' (configs/cnn.py).
  config.hidden_units = 128  # Units in each hidden Dense layer (+ config.activation).
  config.num_hidden_layers = 1  # Number of hidden layers.
  config.kernel_init = 'glorot_uniform'  # Keras's Dense default; or 'lecun_normal'.
  config.activation = 'relu'  # Hidden layers' activation: 'relu', 'tanh', 'sigmoid' or 'gelu'.
  # Fraction of each hidden layer's outputs dropped while training (keys from seed and step;
  # evaluation and predict never drop); 0 = none, the lab's network.
  config.dropout_rate = 0.0
  # The CNN's sizes (model='cnn'): per entry of features a 3x3 conv + 2x2 max-pool, then
  # one hidden Dense layer of dense_units.
  config.cnn = ml_collections.ConfigDict({'features': (32, 64), 'dense_units': 128})

  # Optimisation. config.optimizer names an entry of digits_jax/optimizers.py's registry:
  # 'keras_adam' (Keras's Adam update rule, the lab's) or an optax optimizer ('sgd', 'adamw',
  # 'rmsprop', ...); it takes the fields below that its signature names, and the others
  # must stay at these defaults. E.g. --config.optimizer=sgd --config.momentum=0.9.
  config.optimizer = 'keras_adam'
  config.learning_rate = 1e-3  # Step size (every optimizer).
  config.b1 = 0.9  # First-moment decay (Adam family, lion, ...).
  config.b2 = 0.999  # Second-moment decay (Adam family, lion, ...).
  config.eps = 1e-7  # Epsilon (Keras's default, not optax's 1e-8), for those that take one.
  config.momentum = 0.0  # Momentum (sgd, rmsprop, lars, sm3); 0 = none.
  config.nesterov = False  # Nesterov momentum (sgd, rmsprop, the Adam family).
  config.weight_decay = 0.0  # Decoupled weight decay (adamw, lamb, lion, ...); 0 = none.
  config.num_epochs = 10  # Passes over the training split.
  config.batch_size = 32  # Global training batch size (the last partial batch is kept).
  config.seed = 0  # Seeds initialisation and the per-epoch shuffles.
  # Replicas trained at once in one program, with seeds seed, seed + 1, ...: replica k is
  # the run with seed + k; results.json adds per_seed values and their summary.
  config.num_seeds = 1
  # Keras habits, both watching the validation accuracy (they need validation_split > 0):
  config.restore_best = False  # Test the best validation epoch's weights (ModelCheckpoint).
  config.early_stopping_patience = 0  # Stop after N epochs with no better val. accuracy; 0 = off.
  config.compute_dtype = 'float32'  # 'float32' or 'bfloat16' (matmuls; params stay f32).

  # Speed (see benchmarks/README.md for the measurements behind the defaults).
  config.steps_per_call = 512  # Optimizer steps per jit call (lax.scan block).
  config.data_on_device = True  # Keep the uint8 dataset on device; False = feed via tf.data.
  config.eval_batch_size = 2500  # Examples per evaluation call (padded and masked).
  # Fused C++ CPU kernel for the training blocks (digits_jax/cpu_kernel.py): 'auto' uses it
  # on one CPU device with float32, keras_adam, data_on_device and batch <= 32 (where it
  # is measured faster than the XLA scan); 'on' requires it; 'off' never uses it.
  config.cpu_kernel = 'auto'

  # Lab outputs.
  config.num_show = 25  # First N training images drawn in samples.png.
  config.test_indices = (1,)  # Test images to recognise (indices into the test set).
  config.num_misclassified_show = 5  # First K misclassified test images drawn.

  # Checkpoints and bookkeeping.
  config.checkpoint_every_epochs = 1  # Save a checkpoint every this many epochs,
  config.checkpoint_min_interval_seconds = 10.0  # but not within this long of the last.
  config.max_checkpoints_to_keep = 2  # Older checkpoints are deleted.
  config.progress_bar = True  # Per-epoch progress bar (only shown on a terminal).
  config.tensorboard = True  # Write TensorBoard scalars and images to workdir/tensorboard.
  config.write_report = True  # Write report.html at the end of the run.
  return config
