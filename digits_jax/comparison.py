"""Result tables across runs: the finished runs of a folder and the files comparing them.

comparison.csv holds every run's exact values (one row per run, from its results.json),
comparison.md the same rounded for reading, significance.csv each cell against its
dataset's reference cell, sweep.json what a sweep varied. The sweep report shows these.
"""

import json
import os
import re

from digits_jax import analysis
from digits_jax import config_files
from digits_jax import errors
from digits_jax import results as results_lib
from digits_jax import significance
from digits_jax import stats

# A cell's test accuracy over its seeds: n, mean, std, the 95% interval, min and max; then
# replica 0's own numbers (the config's seed: test_accuracy, test_loss, ...) and seconds.
# `run` is the run's folder name; `differs` the config fields that set it apart from the
# other runs of its variant name (e.g. two `default` runs at other learning rates);
# `model` the network as the model describes itself ('128', '256 x 256', 'conv 32-64, ...').
COMPARISON_FIELDS = ('run', 'variant', 'differs', 'dataset', 'model', 'params',
                     'epochs', 'batch',
                     'validation_split', 'n', 'test_accuracy_mean', 'test_accuracy_std',
                     'test_accuracy_ci95_low', 'test_accuracy_ci95_high', 'test_accuracy_min',
                     'test_accuracy_max', 'best_val_accuracy', 'final_val_accuracy',
                     'test_accuracy', 'test_loss', 'misclassified', 'train_seconds',
                     'train_seconds_per_seed')
FILES = {'csv': 'comparison.csv', 'md': 'comparison.md',
         'significance': 'significance.csv', 'info': 'sweep.json'}


def variant_key(name):
  """Sort key: 'default' first, then v1, v2, ..., v10, then other names."""
  m = re.fullmatch(r'v(\d+)', name)
  return (0, 0, '') if name == 'default' else (1, int(m.group(1)), '') if m else (2, 0, name)


def run_folders(sweep_dir):
  """The subfolders of `sweep_dir` holding a results.json, but for folders a run was moved
  aside to (`*.old-<time>`, see workdir.prepare_workdir)."""
  names = sorted(os.listdir(sweep_dir)) if os.path.isdir(sweep_dir) else []
  return [os.path.join(sweep_dir, name) for name in names if '.old-' not in name
          and os.path.isfile(os.path.join(sweep_dir, name, results_lib.FILES['results']))]


def find_runs(sweep_dir, unreadable=None):
  """The finished runs directly under `sweep_dir`: {subfolder: results.json content}.

  A run whose files are damaged or unfinished (results.read_finished) is left out, and
  its reason put in the dict `unreadable` if given: one damaged cell does not take the
  others' comparison down.
  """
  runs = {}
  for workdir in run_folders(sweep_dir):
    try:
      runs[workdir] = results_lib.read_finished(workdir)
    except errors.FileProblem as e:
      if unreadable is not None:
        unreadable[workdir] = str(e)
  return dict(sorted(runs.items(), key=lambda kv: (
      analysis.dataset_key(kv[1]['dataset']), variant_key(kv[1]['name']), kv[0])))


def unreadable_runs(sweep_dir):
  """{subfolder: reason} of the runs find_runs leaves out."""
  unreadable = {}
  find_runs(sweep_dir, unreadable)
  return unreadable


def comparison_row(res):
  """One run's row of comparison.csv, every value taken from its results.json.

  The spread over seeds comes from per_seed.test_accuracy (one value before num_seeds).
  """
  acc = stats.summarize(significance.seed_values(res))
  ci = acc['ci95'] or [None, None]
  return {'variant': res['name'], 'dataset': res['dataset'],
          'model': results_lib.model_description(res),
          'params': res['num_params'], 'epochs': res['num_epochs'], 'batch': res['batch_size'],
          'validation_split': res['validation_split'], 'n': acc['n'],
          'test_accuracy_mean': acc['mean'], 'test_accuracy_std': acc['std'],
          'test_accuracy_ci95_low': ci[0], 'test_accuracy_ci95_high': ci[1],
          'test_accuracy_min': acc['min'], 'test_accuracy_max': acc['max'],
          'best_val_accuracy': res['best_val_accuracy'],
          'final_val_accuracy': res['final_val_accuracy'],
          'test_accuracy': res['test_accuracy'], 'test_loss': res['test_loss'],
          'misclassified': res['misclassified_count'],
          'train_seconds': res['timings']['train_seconds'],
          'train_seconds_per_seed': res['timings']['train_seconds'] / acc['n']}


def formatted(row):
  """A comparison row for reading: accuracies in percent, losses and seconds rounded."""
  out = dict(row)
  for k in ('best_val_accuracy', 'final_val_accuracy', 'test_accuracy', 'test_accuracy_mean',
            'test_accuracy_ci95_low', 'test_accuracy_ci95_high', 'test_accuracy_min',
            'test_accuracy_max'):
    out[k] = analysis.pct(row[k]) if row[k] is not None else '-'
  out['test_accuracy_std'] = (f'{100 * row["test_accuracy_std"]:.2f} pt' if row['n'] > 1
                              else 'one seed: no spread')
  out['test_accuracy_ci95'] = (f'[{analysis.pct(row["test_accuracy_ci95_low"])}, '
                               f'{analysis.pct(row["test_accuracy_ci95_high"])}]'
                               if row['test_accuracy_ci95_low'] is not None else '-')
  out['test_accuracy_range'] = f'{out["test_accuracy_min"]} - {out["test_accuracy_max"]}'
  out['validation_split'] = f'{100 * row["validation_split"]:g}%'
  out['test_loss'] = f'{row["test_loss"]:.4f}'
  for k in ('train_seconds', 'train_seconds_per_seed'):
    out[k] = f'{row[k]:.1f}'
  out['params'] = f'{row["params"]:,}'
  return out


def comparison_fields(vary=()):
  """COMPARISON_FIELDS with a column per --vary field after 'variant' (a --vary sweep's
  cells differ in those fields: each value gets its own column to sort and read)."""
  i = COMPARISON_FIELDS.index('variant') + 1
  extra = tuple(f for f in vary if f not in COMPARISON_FIELDS)
  return COMPARISON_FIELDS[:i] + extra + COMPARISON_FIELDS[i:]


def varied_values(workdir, vary):
  """{field: value} of the --vary fields in a run's saved config (completed where read)."""
  if not vary:
    return {}
  config = config_files.read_run_config(workdir)
  return {f: config[f] for f in vary}


def write_comparison(sweep_dir):
  """comparison.csv (exact values) and comparison.md (rounded) of every finished run.

  A --vary sweep's fields get a column each (comparison_fields); comparison.md leaves out
  the `differs` column where no run needs it.

  Returns:
    The comparison rows (dicts keyed by comparison_fields), in table order.
  """
  runs = find_runs(sweep_dir)
  differs = differing_fields(runs)
  vary = read_sweep_info(sweep_dir)['vary']
  fields = comparison_fields(vary)
  rows = [dict(comparison_row(res), **varied_values(w, vary), run=os.path.basename(w),
               differs=differs[w]) for w, res in runs.items()]
  results_lib.write_csv(os.path.join(sweep_dir, FILES['csv']), fields, rows)
  shown = [k for k in fields if k != 'differs' or any(differs.values())]
  lines = [f'# Sweep comparison: {os.path.abspath(sweep_dir)}', '',
           '| ' + ' | '.join(shown) + ' |', '|' + '|'.join('---' for _ in shown) + '|']
  lines += ['| ' + ' | '.join(str(formatted(r)[k]) for k in shown) + ' |' for r in rows]
  results_lib.write_text(os.path.join(sweep_dir, FILES['md']), '\n'.join(lines) + '\n')
  return rows


def differing_fields(runs):
  """{workdir: 'field=value, ...'}: for runs sharing a variant name on a dataset, the config
  fields whose values differ among them ('' for a run whose name is its own)."""
  groups = {}
  for workdir, res in runs.items():
    groups.setdefault((res['dataset'], res['name']), []).append(workdir)
  out = {w: '' for w in runs}
  for workdirs in groups.values():
    if len(workdirs) < 2:
      continue
    configs = {w: config_files.read_run_config(w).to_dict() for w in workdirs}
    fields = sorted({k for c in configs.values() for k in c})
    differ = [k for k in fields
              if len({json.dumps(c.get(k), sort_keys=True) for c in configs.values()}) > 1]
    for w, config in configs.items():
      out[w] = ', '.join(f'{k}={config.get(k)!r}'.replace("'", '') for k in differ)
  return out


def labels(runs):
  """A plot label per run: its variant, or its folder's name where a variant repeats."""
  key = lambda res: (res['dataset'], res['name'])
  counts = {}
  for res in runs.values():
    counts[key(res)] = counts.get(key(res), 0) + 1
  return {w: res['name'] if counts[key(res)] == 1 else os.path.basename(w)
          for w, res in runs.items()}


def write_sweep_info(sweep_dir, *, reference, vary):
  """sweep.json: what the cells are compared with, and the --vary fields and values."""
  results_lib.write_json(os.path.join(sweep_dir, FILES['info']),
                         {'reference': reference, 'vary': vary})


def read_sweep_info(sweep_dir):
  """sweep.json, or a plain sweep's (the lab's variants, compared with 'default')."""
  path = os.path.join(sweep_dir, FILES['info'])
  fix = 'Rerun the sweep\'s command: it rewrites sweep.json and skips the finished cells.'
  info = results_lib.read_json(path, fix=fix) if os.path.exists(path) else {}
  return {'reference': info.get('reference', 'default'), 'vary': info.get('vary', {})}


def sweep_cells(runs, names):
  """One cell per run: dataset, plot label, test accuracy per seed and train seconds."""
  return [{'dataset': res['dataset'], 'variant': names[w],
           'values': significance.seed_values(res),
           'train_seconds': res['timings']['train_seconds'], 'workdir': w}
          for w, res in runs.items()]


def write_significance(sweep_dir, cells, reference):
  """significance.csv: each cell against its dataset's reference cell; returns the rows."""
  rows = significance.compare(cells, reference)
  results_lib.write_csv(os.path.join(sweep_dir, FILES['significance']),
                        significance.FIELDS, rows)
  return rows


def vary_cells(cells, vary):
  """The cells of a --vary sweep with their x (first field) and series (the others)."""
  first, others = list(vary)[0], list(vary)[1:]
  out = []
  for cell in cells:
    config = config_files.read_run_config(cell['workdir'])
    if isinstance(config[first], bool) or not isinstance(config[first], (int, float)):
      return []
    out.append(dict(cell, x=config[first],
                    series=','.join(f'{f}={config[f]}' for f in others)))
  return out


def first_seed(history):
  """The rows of history.csv of its first seed (a multi-seed run has a seed column)."""
  if not history or 'seed' not in history[0]:
    return history
  return [h for h in history if h['seed'] == history[0]['seed']]
