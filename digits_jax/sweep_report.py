"""A sweep's report.html, comparing its runs; with comparison.csv/md and significance.csv.

Every number comes from the runs' saved files (comparison.py reads them); the figures
are drawn by sweep_figures.py, the page from html_page.py's blocks.
`python -m digits_jax.report --workdir=SWEEP_DIR` is the command (report.py).
"""

import dataclasses
import html
import os
import sys

from digits_jax import analysis
from digits_jax import comparison
from digits_jax import errors
from digits_jax import html_page as hp
from digits_jax import input_pipeline
from digits_jax import results as results_lib
from digits_jax import significance
from digits_jax import sweep_figures

SWEEP_SECTIONS = ('Goal', 'Comparison table', 'Mean test accuracy over seeds', 'Significance',
                  'Test accuracy vs parameter count', 'Validation accuracy curves',
                  'Conclusions')
VARY_SECTION = 'Effect of the varied fields'  # After 'Significance', in a --vary sweep.
# Short column titles for the HTML table, which shows these fields only (the CSV and
# Markdown keep every field, with its name).
COMPARISON_TITLES = {'variant': 'run', 'differs': 'differs', 'model': 'model',
                     'params': 'params',
                     'epochs': 'epochs', 'batch': 'batch', 'validation_split': 'val. split',
                     'n': 'seeds', 'test_accuracy_mean': 'mean test acc.',
                     'test_accuracy_std': 'std', 'test_accuracy_ci95': '95% interval',
                     'test_accuracy_range': 'min - max', 'train_seconds': 'train s'}
SWEEP_FIGURES = {'means': 'sweep_mean_accuracy.png', 'vary': 'sweep_vary.png',
                 'params': 'sweep_accuracy_vs_params.png', 'curves': 'sweep_val_accuracy.png'}


def dataset_titles():
  """{dataset: title} of every registered dataset, for the figures' panel titles."""
  return {name: record.title for name, record in input_pipeline.DATASETS.items()}


def _table_titles(differs, vary):
  """{column: title} of the HTML table: COMPARISON_TITLES, a --vary field's column after
  the run's, and `differs` only where a run needs it."""
  titles = {k: t for k, t in COMPARISON_TITLES.items() if k != 'differs' or any(differs.values())}
  keys = list(titles)
  keys[1:1] = [f for f in vary if f not in titles]
  return {k: titles.get(k, k) for k in keys}


def _sweep_tables(sweep_dir, runs, vary=()):
  """One comparison table per dataset; variant names link to the runs' own reports."""
  parts = []
  names, differs = comparison.labels(runs), comparison.differing_fields(runs)
  titles = _table_titles(differs, vary)
  for dataset in sorted({r['dataset'] for r in runs.values()}, key=analysis.dataset_key):
    rows = []
    for workdir, res in runs.items():
      if res['dataset'] != dataset:
        continue
      cells = dict(comparison.formatted(comparison.comparison_row(res)),
                   **comparison.varied_values(workdir, vary),
                   variant=names[workdir], differs=differs[workdir])
      if os.path.exists(os.path.join(workdir, hp.REPORT)):
        link = f'{os.path.basename(workdir)}/{hp.REPORT}'
        cells['variant'] = hp.Raw(
            f'<a href="{html.escape(link)}">{html.escape(names[workdir])}</a>')
      rows.append([cells[k] for k in titles])
    parts.append(hp.Raw(f'<h3>{html.escape(input_pipeline.title(dataset))}</h3>'))
    parts.append(hp.table(list(titles.values()), rows, left=tuple(
        i for i, k in enumerate(titles) if k in ('variant', 'differs', 'model'))))
  return parts


def _significance_tables(rows, reference_label):
  """One table per dataset: difference with its interval, p and Holm-adjusted p."""
  parts = []
  p = lambda x: '-' if x is None else ('<0.001' if x < 0.001 else f'{x:.3f}')
  for dataset in sorted({r['dataset'] for r in rows}, key=analysis.dataset_key):
    body = [[r['variant'], r['n'], analysis.pct(r['mean']), analysis.pct(r['reference_mean']),
             significance.interval(r), p(r['p_value']), p(r['p_holm']),
             'yes' if r['significant'] else 'no'] for r in rows if r['dataset'] == dataset]
    parts.append(hp.Raw(f'<h3>{html.escape(input_pipeline.title(dataset))}</h3>'))
    parts.append(hp.table(['variant', 'seeds', 'mean', f'{reference_label}', 'difference [95%]',
                        'Welch p', 'Holm p', f'p_holm < {significance.ALPHA}'], body,
                       left=(0,)))
  return parts


@dataclasses.dataclass
class Sweep:
  """What a sweep's page is made of, read once from its folder."""
  sweep_dir: str
  runs: dict  # {workdir: results.json}
  vary: dict  # {field: values} of a --vary sweep, else {}.
  reference: str  # The cell the others are compared with.
  reference_label: str
  rows: list  # comparison.csv's rows.
  names: dict  # {workdir: label}
  cells: list  # comparison.sweep_cells
  sig: list  # significance.csv's rows.

  @property
  def datasets(self):
    return sorted({r['dataset'] for r in self.rows}, key=analysis.dataset_key)

  def path(self, key):
    return os.path.join(self.sweep_dir, SWEEP_FIGURES[key])


def read_sweep(sweep_dir):
  """The sweep's runs and their comparison (writing comparison.csv/md, significance.csv)."""
  runs = comparison.find_runs(sweep_dir)
  info = comparison.read_sweep_info(sweep_dir)
  vary, reference = info['vary'], info['reference']
  reference_label = f'the base ({reference})' if vary else f'the {reference} config'
  rows = comparison.write_comparison(sweep_dir)
  names = comparison.labels(runs)
  if names and reference not in names.values():  # A folder of runs without the reference
    reference = reference_label = next(iter(names.values()))  # (e.g. two `default` runs).
  cells = comparison.sweep_cells(runs, names)
  sig = comparison.write_significance(sweep_dir, cells, reference)
  return Sweep(sweep_dir, runs, vary, reference, reference_label, rows, names, cells, sig)


def sweep_vary_cells(sweep):
  """The cells of a --vary sweep by varied value (comparison.vary_cells), else []."""
  return comparison.vary_cells(sweep.cells, sweep.vary) if sweep.vary and sweep.cells else []


def draw_sweep_figures(sweep):
  """The sweep's figures (none without finished runs); returns its vary_cells. They need
  the runs' result files only, not their figures or pages."""
  vary_cells = sweep_vary_cells(sweep)
  if not sweep.rows:
    return vary_cells
  titles, names = dataset_titles(), sweep.names
  sweep_figures.sweep_means(sweep.cells, sweep.path('means'), titles)
  if sweep_figures.params_vary(sweep.rows):
    sweep_figures.sweep_accuracy_vs_params(
        [dict(r, variant=names[w], test_accuracy=r['test_accuracy_mean'])
         for r, w in zip(sweep.rows, sweep.runs)], sweep.path('params'), titles)
  elif os.path.exists(sweep.path('params')):
    os.remove(sweep.path('params'))  # An earlier sweep's, in this folder.
  sweep_figures.sweep_val_curves(
      [(res['dataset'], names[w], comparison.first_seed(results_lib.read_history(w)))
       for w, res in sweep.runs.items()
       if os.path.exists(os.path.join(w, results_lib.FILES['history']))],
      sweep.path('curves'), titles)
  if vary_cells:
    sweep_figures.vary_effect(vary_cells, list(sweep.vary)[0], sweep.path('vary'),
                              sweep.reference, titles)
  return vary_cells


def _goal_section(sweep):
  """What the lab does, and what this page compares."""
  values = '; '.join(f'{f}: {", ".join(map(str, v))}' for f, v in sweep.vary.items())
  swept = os.path.exists(os.path.join(sweep.sweep_dir, comparison.FILES['info']))
  what = (f'the values of {" x ".join(sweep.vary)} ({values}) around a base config, whose '
          f'own values ({sweep.reference}) are the reference'
          if sweep.vary else 'the variants of the lab (table 1)' if swept
          else 'the runs in this folder (each named by its folder)')
  return hp.section('Goal', hp.goal(sweep.datasets),
                    f'This page compares {what}{" trained in this sweep" if swept else ""}. '
                    'Each cell (a config on a '
                    'dataset) holds one test accuracy per seed; every number comes with its '
                    'spread, and a difference is called one only where it holds.')


def _param_counts(rows):
  """'101,770' (or '101,770 on MNIST, 50,890 on ...'): the parameter count per dataset."""
  counts = {r['dataset']: int(r['params']) for r in rows}
  if len(set(counts.values())) == 1:
    return f'{next(iter(counts.values())):,}'
  return ', '.join(f'{n:,} on {input_pipeline.title(d)}' for d, n in counts.items())


def sweep_sections(sweep, vary_cells):
  """The sections of a sweep's page, in order (SWEEP_SECTIONS, VARY_SECTION)."""
  plot = lambda key, alt: (hp.img(sweep.path(key), alt)
                           if sweep.rows and hp.is_png(sweep.path(key)) else 'No runs.')
  sig, label = sweep.sig, sweep.reference_label
  sections = [
      _goal_section(sweep),
      hp.section('Comparison table', *_sweep_tables(sweep.sweep_dir, sweep.runs, sweep.vary),
                 'Mean, sample std, 95% t-interval, min and max of the test accuracy over '
                 'the seeds of each cell; train s: the cell\'s training, all seeds together. '
                 'The exact values, with seed 0\'s own numbers, are in '
                 f'{comparison.FILES["csv"]}.'),
      hp.section('Mean test accuracy over seeds',
                 plot('means', 'mean test accuracy and 95% interval per config')),
      hp.section('Significance', *_significance_tables(sig, label),
                 f'Each cell against {label} on the same dataset: the difference of '
                 "the mean test accuracies with its 95% Welch interval, Welch's t-test "
                 "p-value (unequal variances), and that p-value Holm-adjusted over the "
                 f'dataset\'s comparisons. Exact values: {comparison.FILES["significance"]}.'
                 if sig else 'No reference cell to compare with in this folder.'),
  ]
  if sweep.vary:
    sections.append(hp.section(VARY_SECTION, plot('vary', 'test accuracy against the '
                                                  'varied value')
                               if vary_cells else 'The plot needs numeric values.',
                               'Train seconds are not plotted: each cell has one timing, '
                               'taken on a shared machine, so a curve of them would show '
                               'load noise without an interval. The table gives them.'))
  return sections + [
      hp.section('Test accuracy vs parameter count',
                 plot('params', 'test accuracy vs parameters')
                 if sweep_figures.params_vary(sweep.rows) else
                 'Every run of a dataset has the same parameter count '
                 f'({_param_counts(sweep.rows)}): a plot against it would say nothing.'),
      hp.section('Validation accuracy curves', plot('curves', 'validation accuracy per epoch'),
                 'Seed 0 of each cell.' if any(len(c['values']) > 1 for c in sweep.cells)
                 else ''),
      hp.conclusions_section(significance.conclusions(sig, sweep.cells, label,
                                                      dataset_titles())),
  ]


def write_sweep_report(sweep_dir, draw_figures=True):
  """Writes comparison.csv/md, significance.csv and report.html comparing a sweep's runs.

  Args:
    sweep_dir: a folder whose subfolders are runs (each with results.json when finished).
    draw_figures: False where the sweep's figures are drawn already from its runs' results
      (a sweep's drawing worker draws them beside the last runs' figures).

  Returns:
    The path of sweep_dir/report.html.
  """
  sweep = read_sweep(sweep_dir)
  sections = sweep_sections(sweep, draw_sweep_figures(sweep) if draw_figures
                            else sweep_vary_cells(sweep))
  titles = ', '.join(input_pipeline.title(d) for d in sweep.datasets)
  text = hp.page(f'Sweep: {len(sweep.rows)} cells ({titles or "none"})',
                 f'digits_jax sweep report - {os.path.abspath(sweep_dir)}', sections,
                 'Written by digits_jax.report from the runs in this folder.')
  out = os.path.join(sweep_dir, hp.REPORT)
  results_lib.write_text(out, text)
  return out


def warn_unreadable_runs(sweep_dir):
  """One `warning:` line on stderr per run of the sweep that its report leaves out; a
  UserError if that is every run."""
  unreadable = comparison.unreadable_runs(sweep_dir)
  for reason in unreadable.values():
    print(f'warning: left out of the sweep report: {reason}', file=sys.stderr, flush=True)
  if unreadable and len(unreadable) == len(comparison.run_folders(sweep_dir)):
    raise errors.UserError(f'{sweep_dir}: no run there can be read (each is named above); '
                           'rerun the sweep\'s command to rewrite their result files.')
