"""The workdir guard: a workdir holds the run of one config, resumed or moved aside, never mixed.

config.json (written before training) records the config a workdir's checkpoints belong
to. A later run in the same workdir may change only the fields of `RESUMABLE_FIELDS`;
every other field, including any field added to the config later, is guarded.
"""

import datetime
import os
import shutil

from digits_jax import checkpoint as ckpt_lib
from digits_jax import parallel
from digits_jax import results as results_lib

# Fields that may differ when a run resumes: they change neither the checkpoints' meaning
# nor the batches. num_epochs may grow (the shuffles depend only on seed and epoch, so
# extending a run gives exactly the longer run); the others choose where the data is read
# from, how steps are dispatched, and which outputs are written.
RESUMABLE_FIELDS = frozenset({
    'name', 'num_epochs', 'data_source', 'data_dir', 'verify_checksums', 'steps_per_call',
    'data_on_device', 'eval_batch_size', 'cpu_kernel', 'num_show', 'test_indices',
    'num_misclassified_show', 'checkpoint_every_epochs', 'max_checkpoints_to_keep',
    'progress_bar', 'tensorboard', 'write_report'})


# Fields added to the config later, with the value a config.json written before them
# implied: such a run resumes as if it had recorded that value.
IMPLIED_BEFORE_ADDED = {'num_seeds': 1}


class WorkdirMismatchError(ValueError):
  """The workdir holds a run of another config."""


def same_value(a, b):
  """Equal config values, as saved in config.json (JSON turns tuples into lists)."""
  norm = lambda v: list(v) if isinstance(v, (tuple, list)) else v
  return norm(a) == norm(b)


def changed_fields(old, new, *, may_change=RESUMABLE_FIELDS):
  """'field: old -> new' for each field of either dict (but `may_change`) that differs."""
  keys = sorted((set(old) | set(new)) - set(may_change))
  return [f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in keys
          if not same_value(old.get(k), new.get(k))]


def prepare_workdir(config, workdir, *, fresh):
  """Refuses a workdir holding another config's run; with `fresh`, moves the old run aside.

  Returns the folder the old run was moved to, or None.
  """
  path = os.path.join(workdir, results_lib.FILES['config'])
  if not os.path.exists(path) and not ckpt_lib.has_checkpoint(workdir):
    return None
  if fresh:
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    aside = f'{os.path.abspath(workdir).rstrip(os.sep)}.old-{stamp}'
    if parallel.is_main_process():
      shutil.move(workdir, aside)
    parallel.barrier('moved_aside')  # No process may read the old run once it moved.
    return aside
  old = results_lib.read_json(path) if os.path.exists(path) else {}
  diff = changed_fields({**IMPLIED_BEFORE_ADDED, **old}, config.to_dict())
  if diff:
    raise WorkdirMismatchError(
        f'workdir {workdir!r} holds a run of a different config ({"; ".join(diff)}). '
        'Use another --workdir, or pass --fresh to move the old run aside and start anew.')
  return None
