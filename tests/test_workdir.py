"""The workdir guard's field set and the block runner's executable key (fast, no training)."""

import numpy as np

from configs import default
from digits_jax import steps
from digits_jax import workdir


def test_every_resumable_field_is_a_config_field():
  assert workdir.RESUMABLE_FIELDS <= set(default.get_config().keys())


def test_a_field_not_on_the_allow_list_is_guarded():
  saved = default.get_config().to_dict()
  new = dict(saved, num_epochs=50, data_dir='/elsewhere', test_indices=[7])
  assert workdir.changed_fields(saved, new) == []
  assert workdir.changed_fields(saved, dict(saved, learning_rate=0.5)) == [
      'learning_rate: 0.001 -> 0.5']
  # A field added to the config later is guarded without being listed anywhere.
  assert workdir.changed_fields(saved, dict(saved, new_field=3)) == ['new_field: None -> 3']


def test_tuples_and_their_json_lists_are_the_same_value():
  assert workdir.changed_fields({'test_indices': [1, 2], 'x': [3]}, {'test_indices': (1, 2),
                                                                      'x': (3,)}) == []


def test_executables_are_keyed_by_structure_shape_and_dtype():
  a = (np.zeros((4, 8), np.int32), np.zeros(8, bool))
  assert steps.shape_key(a) == steps.shape_key((np.ones((4, 8), np.int32), np.ones(8, bool)))
  assert steps.shape_key(a) != steps.shape_key((np.zeros((4, 8), np.int64), np.zeros(8, bool)))
  assert steps.shape_key(a) != steps.shape_key((np.zeros((2, 8), np.int32), np.zeros(8, bool)))
  assert steps.shape_key(a) != steps.shape_key([np.zeros((4, 8), np.int32), np.zeros(8, bool)])
  hash(steps.shape_key(a))
