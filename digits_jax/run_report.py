r"""A run's report.html: a self-contained page drawn from the run's saved files.

Everything comes from the saved result files (config.json, model_summary.txt, history.csv,
predictions.npz, results.json and the figures). The curves and the confusion matrix are
redrawn from those files when missing or broken; a missing image grid (they show dataset
images) gets a note saying how to redraw it, so the page never shows a broken image and
never loads the dataset. The findings come from analysis.py; the building blocks from
html_page.py; `python -m digits_jax.report` is the command (report.py).
"""

import html
import math
import os

from digits_jax import analysis
from digits_jax import config_files
from digits_jax import drawing_pad
from digits_jax import figures
from digits_jax import html_page as hp
from digits_jax import input_pipeline
from digits_jax import optimizers
from digits_jax import results as results_lib
from digits_jax import stats
from digits_jax import train_state as ts

# The <h2> headings of a run's report, in order (tests and links rely on these texts).
RUN_SECTIONS = ('Goal', 'Results', 'Configuration', 'Model summary', 'Training samples',
                'Accuracy and loss curves', 'Recognized test images',
                'Misclassified test images', 'Confusion matrix', 'Per-class accuracy',
                'Conclusions', drawing_pad.TITLE)


def load_run(workdir):
  """The saved results of a finished run, as a dict of its parts (results.read_run), its
  config completed (config_files.complete)."""
  run = results_lib.read_run(workdir)
  return dict(run, config=config_files.complete(run['config']).to_dict())


def ensure_figures(run):
  """Redraws the curves and confusion matrix if missing or broken (from the saved files);
  returns {key: path} of the run's valid figures."""
  workdir, res, preds = run['workdir'], run['res'], run['preds']
  path = lambda key: os.path.join(workdir, figures.FILES[key])
  if not hp.is_png(path('curves')):
    figures.curves(results_lib.read_history(workdir, all_seeds=True), path('curves'))
  if not hp.is_png(path('confusion')):
    figures.confusion(preds['labels'], preds['predicted'], res['class_names'],
                      path('confusion'), figures.replica_note(res))
  return {key: path(key) for key in figures.FILES if hp.is_png(path(key))}


def _figure_or_note(figs, key, alt):
  """The figure if the run has a valid one, else a note saying how to redraw it."""
  if key in figs:
    return hp.img(figs[key], alt)
  return (f'{figures.FILES[key]} is missing or incomplete in this folder. Rerun the run\'s '
          'training command: a finished run is not retrained, it redraws its figures.')


def _probability_cell(p, rec, k):
  """A probability with a bar; the predicted class bold (red if wrong)."""
  cls = 'p'
  if k == rec['predicted']:
    cls += ' pred' if rec['predicted'] == rec['true'] else ' pred wrong'
  return (f'<td class="{cls}"><span class="bar"><span style="width:{100 * p:.1f}%"></span>'
          f'</span>{100 * p:.2f}%</td>')


def recognized_table(res):
  """The chosen test images' 10 output probabilities: one column per image, one row per class."""
  recs, names = res['recognized'], res['class_names']
  head = ''.join(f'<th>test #{r["index"]}</th>' for r in recs)
  verdict = lambda r: ('<span class="good">right</span>' if r['predicted'] == r['true']
                       else '<span class="bad">wrong</span>')
  tr = lambda label, cells: f'<tr><td class="l">{html.escape(label)}</td>{"".join(cells)}</tr>'
  rows = [tr('true class', (f'<td>{html.escape(r["true_name"])}</td>' for r in recs)),
          tr('predicted (argmax)', (f'<td>{html.escape(r["predicted_name"])} ({verdict(r)})'
                                    '</td>' for r in recs))]
  rows += [tr(f'P({name})', (_probability_cell(r['probabilities'][k], r, k) for r in recs))
           for k, name in enumerate(names)]
  return hp.Raw(f'<div class="tw"><table><tr><th class="l">output</th>{head}</tr>'
                f'{"".join(rows)}</table></div>')


def per_class_table(cm, names):
  """Per class: test images, correct, accuracy and the class most often predicted instead."""
  named = any(n != str(c) for c, n in enumerate(names))  # MNIST's names are the digits.
  rows = []
  for c, name in enumerate(names):
    total = int(cm[c].sum())
    off = [(int(cm[c, p]), p) for p in range(len(names)) if p != c]
    count, other = max(off) if off else (0, c)
    rows.append((c,) + ((name,) if named else ()) + (
        f'{total:,}', f'{int(cm[c, c]):,}',
        analysis.pct(cm[c, c] / total) if total else 'n/a',
        f'{names[other]} ({count})' if count else '-'))
  header = ('class',) + (('name',) if named else ()) + (
      'test images', 'correct', 'accuracy', 'most often mistaken for (times)')
  return hp.table(header, rows, left=(1, 5) if named else (4,))


def _results_section(run):
  """Headline numbers as tiles, then where and with what the run was made."""
  res = run['res']
  timings = res.get('timings', {})
  kept = res.get('restore_best') or res.get('early_stopping_patience')
  note = f' (weights of epoch {res["evaluated_epoch"]})' if kept else ''
  shown = [m for m in ts.METRICS if 'test_' + m.name in res]  # An older run: its own.
  tiles = [(metric_text(m)(res['test_' + m.name]), f'test {m.name}' + (note if not k else ''))
           for k, m in enumerate(shown)]
  tiles += [(f'{res["misclassified_count"]:,} / {res["num_test"]:,}', 'misclassified'),
            (analysis.pct(res.get('best_val_accuracy')),
             f'best val. accuracy (epoch {res.get("best_epoch")})'),
            (f'{res["num_params"]:,}', 'parameters'),
            (f'{timings.get("train_seconds", math.nan):.1f} s',
             f'training, {res.get("epochs_trained", res["num_epochs"])} epochs'
             + (f' (stopped early; of {res["num_epochs"]})'
                if res.get('stopped_early_at_epoch') else ''))]
  kpi = ''.join(f'<div><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>'
                for v, k in tiles)
  dev = res.get('devices', {})
  where = (f'Data: {res.get("data_source", "?")}: {res["num_train"]:,} training, '
           f'{res["num_val"]:,} validation, {res["num_test"]:,} test images. Devices: '
           f'{dev.get("count", "?")} x {dev.get("kind", "?")} ({dev.get("platform", "?")}). '
           f'Finished {res.get("finished_at", "?")}.')
  return hp.section('Results', hp.Raw(f'<div class="kpi">{kpi}</div>'), where, *_seeds_table(res))


def metric_text(metric):
  """How a page writes the metric's values: a percentage or four decimals."""
  return analysis.pct if metric.percent else '{:.4f}'.format


def seed_columns():
  """The per-seed table's (results.json per_seed key, title, format): each declared
  metric's test value (train_state.METRICS), then OUTCOME_COLUMNS."""
  return tuple(('test_' + m.name, f'test {m.name}', metric_text(m))
               for m in ts.METRICS) + OUTCOME_COLUMNS


OUTCOME_COLUMNS = (('misclassified_count', 'wrong', '{:,}'.format),
                ('best_epoch', 'best epoch', str),
                ('final_val_accuracy', 'final val. acc.', analysis.pct),
                ('evaluated_epoch', 'tested epoch', str),  # These three with restore_best
                ('epochs_trained', 'epochs trained', str))  # or early stopping only.


def _seeds_table(res):
  """A many-seed run's per-seed numbers and their mean, std and 95% interval (else [])."""
  seeds, per_seed = res.get('seeds') or [], res.get('per_seed') or {}
  if len(seeds) < 2:
    return []
  columns = [c for c in seed_columns() if c[0] in per_seed]
  rows = [[seed] + [fmt(per_seed[key][k]) for key, _, fmt in columns]
          for k, seed in enumerate(seeds)]
  acc = stats.summarize(per_seed['test_accuracy'])
  ci = acc['ci95']
  pct = analysis.pct
  text = (f'The tiles show replica 0 (seed {seeds[0]}). Over the {acc["n"]} seeds the test '
          f'accuracy is {pct(acc["mean"])} +- {100 * acc["std"]:.2f} pt (sample std), 95% '
          f'interval [{pct(ci[0])}, {pct(ci[1])}], range {pct(acc["min"])} - '
          f'{pct(acc["max"])}.')
  return [hp.table(['seed'] + [title for _, title, _ in columns], rows), text]


def _config_section(config):
  """config.json as a four-column (field, value, field, value) table."""
  items = [(k, v if not isinstance(v, (list, tuple)) else tuple(v)) for k, v in config.items()]
  half = -(-len(items) // 2)
  left, right = items[:half], items[half:] + [('', '')] * (2 * half - len(items))
  rows = [(a, b, c, d) for (a, b), (c, d) in zip(left, right)]
  return hp.section('Configuration', hp.table(('field', 'value', 'field', 'value'), rows,
                                        left=(0, 1, 2, 3)))


def _recognized_section(res, figs):
  """The chosen test images: their figure and their probabilities table."""
  if not res['recognized']:
    return hp.section('Recognized test images',
                   'No test images were chosen (config.test_indices is empty).')
  return hp.section('Recognized test images', *_replica_sentence(res, 'probabilities'),
                    hp.row(_figure_or_note(figs, 'recognized',
                                           'chosen test images and their probabilities'),
                           recognized_table(res)))


def _replica_sentence(res, what):
  """[] for one seed; else a sentence saying the section shows replica 0's `what`."""
  seeds = res.get('seeds') or []
  if len(seeds) < 2:
    return []
  return [f'These are the {what} of replica 0 (seed {seeds[0]}) of {len(seeds)} seeds; '
          'the per-seed table under Results has every seed\'s numbers.']


def _misclassified_section(run, figs):
  """How many test images were misclassified, and the first ones drawn."""
  res, config = run['res'], run['config']
  wrong = results_lib.misclassified(run['preds']['probabilities'], run['preds']['labels'])
  shown = min(len(wrong), config['num_misclassified_show'])
  return hp.section('Misclassified test images',
                 f'{len(wrong):,} of {res["num_test"]:,} test images '
                 f'({analysis.pct(len(wrong) / max(res["num_test"], 1))}) were '
                 f'misclassified{figures.replica_note(res).replace(" - ", " by ")}; the '
                 f'first {shown} are shown with their true and predicted classes.',
                 _figure_or_note(figs, 'misclassified', 'misclassified test images'))


def network_words(res):
  """A run's network in words, from what its model declared in results.json."""
  if 'model_architecture' not in res:  # Saved before models were named: the lab's MLP.
    return f'an MLP (hidden layers {results_lib.model_description(res)})'
  return (f'a neural network (model {res["model"]!r}, {res["model_description"]}: '
          f'{res["model_architecture"]})')


def run_sections(run, figs, cm):
  """The sections of a run's page, in order (RUN_SECTIONS)."""
  res = run['res']
  return [
      hp.section('Goal', hp.goal([res['dataset']], optimizers.describe(run['config']),
                                 network_words(res))),
      _results_section(run),
      _config_section(run['config']),
      hp.section('Model summary', hp.Raw(f'<pre>{html.escape(run["summary"])}</pre>')),
      hp.section('Training samples', _figure_or_note(figs, 'samples', 'first training images')),
      hp.section('Accuracy and loss curves', hp.img(figs['curves'], 'accuracy and loss per epoch')),
      _recognized_section(res, figs),
      _misclassified_section(run, figs),
      hp.section('Confusion matrix', hp.img(figs['confusion'], 'confusion matrix'),
              'Rows: the true class; columns: the predicted one. Colour on a log scale, so '
              'that the few errors show beside the diagonal.'),
      hp.section('Per-class accuracy', per_class_table(cm, res['class_names'])),
      hp.conclusions_section(analysis.conclusions(run, cm)),
      hp.section(drawing_pad.TITLE, hp.Raw(drawing_pad.html(run['workdir']))),
  ]


def write_run_report(workdir):
  """Writes workdir/report.html from a finished run's files (redrawing missing plots).

  Args:
    workdir: the folder of a finished run (holding results.json and predictions.npz).

  Returns:
    The path of report.html.
  """
  run = load_run(workdir)
  res = run['res']
  figs = ensure_figures(run)
  cm = figures.confusion_matrix(run['preds']['labels'], run['preds']['predicted'],
                                len(res['class_names']))
  versions = ', '.join(f'{k} {v}' for k, v in res.get('versions', {}).items())
  text = hp.page(f'{res["name"]} on {input_pipeline.title(res["dataset"])}',
              f'digits_jax run report - {os.path.abspath(workdir)}',
              run_sections(run, figs, cm),
              f'Written by digits_jax.report from the files in this folder. {versions}')
  path = os.path.join(workdir, hp.REPORT)
  results_lib.write_text(path, text)
  return path
