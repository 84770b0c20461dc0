"""The workdir guard's field set and the block runner's executable key (fast, no training)."""

import os

import numpy as np
import pytest

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


@pytest.mark.parametrize('text', ['../../../x', '/a', 'data_dir=/a,/b', '.hidden', '..', '',
                                  'a\\b', '<script>alert(1)</script>', 'x' * 300])
def test_a_safe_name_is_one_component_inside_its_folder(tmp_path, text):
  name = workdir.safe_name(text)
  path = os.path.join(str(tmp_path), name)
  assert os.path.dirname(path) == str(tmp_path) and name not in ('', '.', '..')
  assert not name.startswith('.') and len(name) <= 100 and workdir.path_problem(path) is None


def test_safe_names_keep_plain_ones():
  assert workdir.safe_name('hidden_units=64,num_hidden_layers=2_mnist') == (
      'hidden_units=64,num_hidden_layers=2_mnist')


@pytest.mark.parametrize('name, problem', [
    ('run\\', "contains '\\\\'"), ('a[1]', "contains '[' and ']'"),
    ('/'.join(['d' * 250] * 17), 'bytes long; the files a run writes inside need it under')])
def test_paths_the_checkpoint_library_cannot_use_are_refused_up_front(tmp_path, name, problem):
  """Issue 21 item 11: refused before anything is created (no nested folders left)."""
  path = str(tmp_path / name)
  assert problem in workdir.path_problem(path)
  with pytest.raises(workdir.UnsafeWorkdirError, match='cannot hold a run'):
    with workdir.WorkdirLock(path):
      pytest.fail('locked')
  assert os.listdir(tmp_path) == []
