"""digits_jax: the MNIST / Fashion-MNIST MLP lab as a fast, scalable JAX/Flax codebase.

The model and train-state utilities import without TensorFlow:

  from digits_jax.train_state import create_train_state, train_step, eval_step, predict
  from digits_jax.train_state import create_train_states, replica  # Many seeds, stacked.
  from digits_jax.checkpoint import load_trained  # Returns the stacked state.
"""

__version__ = '0.1.0'
