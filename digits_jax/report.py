r"""report.html: a self-contained page per run, and one comparing the runs of a sweep.

  python -m digits_jax.report --workdir=runs/default_mnist   # a run: writes its report.html
  python -m digits_jax.report --workdir=runs/sweep           # a sweep: compares its runs

Everything comes from the saved result files (config.json, model_summary.txt, history.csv,
predictions.npz, results.json and the figures). The curves and the confusion matrix are
redrawn from those files when missing or broken; a missing image grid (they show dataset
images) gets a note saying how to redraw it, so the page never shows a broken image and
never loads the dataset. Figures are embedded as base64 data URIs: the page has no
external resources and opens offline, mailed or archived as a single file.

A page is a list of `Section` values; the navigation is made from their titles. The
findings come from analysis.py, the comparison rows from comparison.py.
"""

import base64
import dataclasses
import html
import math
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging

from digits_jax import analysis
from digits_jax import cli
from digits_jax import comparison
from digits_jax import drawing_pad
from digits_jax import errors
from digits_jax import figures
from digits_jax import input_pipeline
from digits_jax import results as results_lib
from digits_jax import significance
from digits_jax import stats

REPORT = 'report.html'
# The <h2> headings of a run's report, in order (tests and links rely on these texts).
RUN_SECTIONS = ('Goal', 'Results', 'Configuration', 'Model summary', 'Training samples',
                'Accuracy and loss curves', 'Recognized test images',
                'Misclassified test images', 'Confusion matrix', 'Per-class accuracy',
                'Conclusions', drawing_pad.TITLE)
SWEEP_SECTIONS = ('Goal', 'Comparison table', 'Mean test accuracy over seeds', 'Significance',
                  'Test accuracy vs parameter count', 'Validation accuracy curves',
                  'Conclusions')
VARY_SECTION = 'Effect of the varied fields'  # After 'Significance', in a --vary sweep.
SUBJECTS = {'mnist': 'handwritten digits', 'fashion_mnist': 'clothing items'}
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
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PNG_END = b'IEND\xaeB`\x82'

CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0;
 background:#f4f5f7;color:#222;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px;background:#fff;
 box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{margin:0 0 4px;font-size:1.7em}
h2{margin:32px 0 10px;padding-bottom:4px;border-bottom:2px solid #e3e6ea;font-size:1.3em}
h3{margin:18px 0 6px;font-size:1.05em}
.sub{color:#666;margin:0 0 12px}
nav{font-size:.9em;margin:8px 0 0}nav a{margin-right:12px;color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;margin:6px 0 10px;font-size:.9em}
th,td{border:1px solid #dde1e6;padding:3px 8px;text-align:right;vertical-align:middle}
th{background:#f0f2f5;white-space:nowrap}td.l,th.l{text-align:left}
pre{background:#f6f8fa;border:1px solid #e3e6ea;padding:10px;overflow-x:auto;font-size:.85em}
img{max-width:100%;height:auto;display:block;margin:8px 0}
.kpi{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0}
.kpi div{background:#f0f5fb;border-radius:6px;padding:8px 14px;min-width:120px}
.kpi b{display:block;font-size:1.35em}.kpi span{color:#555;font-size:.85em}
.bar{position:relative;width:60px;height:12px;background:#eef0f3;display:inline-block;
 vertical-align:middle;margin-right:4px}td.p{white-space:nowrap}
.bar span{position:absolute;left:0;top:0;bottom:0;background:#8fb8de}
td.pred .bar span{background:#2a9d8f}td.wrong .bar span{background:#e63946}
td.pred{font-weight:bold}.bad{color:#c62828}.good{color:#2e7d32}
.row{display:flex;flex-wrap:wrap;gap:12px 36px;align-items:flex-start}
.row>*{min-width:0}.row img{max-width:480px}
ul.conc li{margin:4px 0}footer{color:#888;font-size:.8em;margin-top:32px}
"""



class Raw(str):
  """HTML that is inserted as is (everything else is escaped)."""


def _esc(value):
  """`value` as HTML text, unless it is Raw HTML already."""
  return value if isinstance(value, Raw) else html.escape(str(value))


def _slug(title):
  """A section's anchor: 'Per-class accuracy' -> 'per-class-accuracy'."""
  return re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-')


def _paragraphs(parts):
  """Strings (escaped, as paragraphs) and Raw HTML, joined."""
  return ''.join(p if isinstance(p, Raw) else f'<p>{html.escape(p)}</p>' for p in parts)


@dataclasses.dataclass(frozen=True)
class Section:
  """An <h2> section of a page: its title and its body (HTML)."""
  title: str
  body: str

  def html(self):
    return (f'<section id="{_slug(self.title)}"><h2>{html.escape(self.title)}</h2>'
            f'{self.body}</section>')


def section(title, *parts):
  """A Section; `parts` are strings (escaped, as paragraphs) or Raw HTML."""
  return Section(title, _paragraphs(parts))


def is_png(path):
  """Whether `path` holds a complete PNG file (signature and end chunk)."""
  if not os.path.isfile(path) or os.path.getsize(path) < len(PNG_SIGNATURE) + len(PNG_END):
    return False
  with open(path, 'rb') as f:
    data = f.read()
  return data.startswith(PNG_SIGNATURE) and data.rstrip(b'\0').endswith(PNG_END)


def img(path, alt):
  """An <img> whose source is the PNG file embedded as a data URI."""
  with open(path, 'rb') as f:
    data = base64.b64encode(f.read()).decode('ascii')
  return Raw(f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">')


def table(header, rows, left=()):
  """An HTML table; columns whose index is in `left` are left-aligned."""
  cls = lambda i: ' class="l"' if i in left else ''
  head = ''.join(f'<th{cls(i)}>{_esc(h)}</th>' for i, h in enumerate(header))
  body = ''.join('<tr>' + ''.join(f'<td{cls(i)}>{_esc(c)}</td>' for i, c in enumerate(r))
                 + '</tr>' for r in rows)
  return Raw(f'<table><tr>{head}</tr>{body}</table>')


def row(*parts):
  """Parts side by side (wrapping on narrow screens)."""
  return Raw('<div class="row">' + ''.join(f'<div>{_esc(p)}</div>' for p in parts) + '</div>')


def page(title, subtitle, sections, footer=''):
  """The whole HTML document: title, navigation to every section's title, the sections."""
  nav = ''.join(f'<a href="#{_slug(s.title)}">{html.escape(s.title)}</a>' for s in sections)
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<meta name="viewport" content="width=device-width, initial-scale=1">'
          f'<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>'
          f'<h1>{html.escape(title)}</h1><p class="sub">{html.escape(subtitle)}</p>'
          f'<nav>{nav}</nav>{"".join(s.html() for s in sections)}'
          f'<footer>{html.escape(footer)}</footer></main></body></html>\n')


def _title(dataset):
  """'fashion_mnist' -> 'Fashion-MNIST'."""
  return input_pipeline.DATASET_TITLES.get(dataset, dataset)


def _goal(dataset=None, network=None):
  """One paragraph on what the lab does (on one dataset, or on both when None), with the
  network as its results.json describes it (`network`; a sweep's runs each have theirs)."""
  if dataset is None:
    what = ('handwritten digits (MNIST, Task 1) and of clothing items (Fashion-MNIST, '
            'Task 2)')
  else:
    what = f'{SUBJECTS.get(dataset, "images")} from {_title(dataset)}'
  network = network or 'neural networks (each run\'s is in the comparison table)'
  return (f'The lab trains {network} to recognise 28×28 grey-level images of '
          f'{what} '
          '(60,000 training and 10,000 test images, 10 classes). Inputs are scaled to [0, 1]; '
          'the loss is categorical cross-entropy and the optimizer Adam. The last fraction of '
          'the training set is held out for validation, as Keras does. After training, the '
          'network is evaluated on the test set, chosen test images are recognised with their '
          '10 output probabilities, and the misclassified test images are counted and shown.')


# ----------------------------------------------------------------------------- run report


def load_run(workdir):
  """The saved results of a finished run, as a dict of its parts (results.read_run)."""
  return results_lib.read_run(workdir)


def ensure_figures(run):
  """Redraws the curves and confusion matrix if missing or broken (from the saved files);
  returns {key: path} of the run's valid figures."""
  workdir, res, preds = run['workdir'], run['res'], run['preds']
  path = lambda key: os.path.join(workdir, figures.FILES[key])
  if not is_png(path('curves')):
    figures.curves(results_lib.read_history(workdir, all_seeds=True), path('curves'))
  if not is_png(path('confusion')):
    figures.confusion(preds['labels'], preds['predicted'], res['class_names'],
                      path('confusion'), figures.replica_note(res))
  return {key: path(key) for key in figures.FILES if is_png(path(key))}


def _figure_or_note(figs, key, alt):
  """The figure if the run has a valid one, else a note saying how to redraw it."""
  if key in figs:
    return img(figs[key], alt)
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
  return Raw(f'<table><tr><th class="l">output</th>{head}</tr>{"".join(rows)}</table>')


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
  return table(header, rows, left=(1, 5) if named else (4,))


def _results_section(run):
  """Headline numbers as tiles, then where and with what the run was made."""
  res = run['res']
  timings = res.get('timings', {})
  kept = res.get('restore_best') or res.get('early_stopping_patience')
  tiles = [(analysis.pct(res['test_accuracy']), 'test accuracy' + (
      f' (weights of epoch {res["evaluated_epoch"]})' if kept else '')),
           (f'{res["test_loss"]:.4f}', 'test loss'),
           (f'{res["misclassified_count"]:,} / {res["num_test"]:,}', 'misclassified'),
           (analysis.pct(res.get('best_val_accuracy')),
            f'best val. accuracy (epoch {res.get("best_epoch")})'),
           (f'{res["num_params"]:,}', 'parameters'),
           (f'{timings.get("train_seconds", math.nan):.1f} s',
            f'training, {res.get("epochs_trained", res["num_epochs"])} epochs'
            + (f' (stopped early; of {res["num_epochs"]})' if res.get('stopped_early_at_epoch')
               else ''))]
  kpi = ''.join(f'<div><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>'
                for v, k in tiles)
  dev = res.get('devices', {})
  where = (f'Data: {res.get("data_source", "?")}: {res["num_train"]:,} training, '
           f'{res["num_val"]:,} validation, {res["num_test"]:,} test images. Devices: '
           f'{dev.get("count", "?")} x {dev.get("kind", "?")} ({dev.get("platform", "?")}). '
           f'Finished {res.get("finished_at", "?")}.')
  return section('Results', Raw(f'<div class="kpi">{kpi}</div>'), where, *_seeds_table(res))


SEED_COLUMNS = (('test_accuracy', 'test acc.', analysis.pct),
                ('test_loss', 'test loss', '{:.4f}'.format),
                ('misclassified_count', 'wrong', '{:,}'.format),
                ('best_epoch', 'best epoch', str),
                ('final_val_accuracy', 'final val. acc.', analysis.pct),
                ('evaluated_epoch', 'tested epoch', str),  # These three with restore_best
                ('epochs_trained', 'epochs trained', str))  # or early stopping only.


def _seeds_table(res):
  """A many-seed run's per-seed numbers and their mean, std and 95% interval (else [])."""
  seeds, per_seed = res.get('seeds') or [], res.get('per_seed') or {}
  if len(seeds) < 2:
    return []
  columns = [c for c in SEED_COLUMNS if c[0] in per_seed]
  rows = [[seed] + [fmt(per_seed[key][k]) for key, _, fmt in columns]
          for k, seed in enumerate(seeds)]
  acc = stats.summarize(per_seed['test_accuracy'])
  ci = acc['ci95']
  pct = analysis.pct
  text = (f'The tiles show replica 0 (seed {seeds[0]}). Over the {acc["n"]} seeds the test '
          f'accuracy is {pct(acc["mean"])} +- {100 * acc["std"]:.2f} pt (sample std), 95% '
          f'interval [{pct(ci[0])}, {pct(ci[1])}], range {pct(acc["min"])} - '
          f'{pct(acc["max"])}.')
  return [table(['seed'] + [title for _, title, _ in columns], rows), text]


def _config_section(config):
  """config.json as a four-column (field, value, field, value) table."""
  items = [(k, v if not isinstance(v, (list, tuple)) else tuple(v)) for k, v in config.items()]
  half = -(-len(items) // 2)
  left, right = items[:half], items[half:] + [('', '')] * (2 * half - len(items))
  rows = [(a, b, c, d) for (a, b), (c, d) in zip(left, right)]
  return section('Configuration', table(('field', 'value', 'field', 'value'), rows,
                                        left=(0, 1, 2, 3)))


def _recognized_section(res, figs):
  """The chosen test images: their figure and their probabilities table."""
  if not res['recognized']:
    return section('Recognized test images',
                   'No test images were chosen (config.test_indices is empty).')
  return section('Recognized test images', row(
      _figure_or_note(figs, 'recognized', 'chosen test images and their probabilities'),
      recognized_table(res)))


def _misclassified_section(run, figs):
  """How many test images were misclassified, and the first ones drawn."""
  res, config = run['res'], run['config']
  wrong = results_lib.misclassified(run['preds']['probabilities'], run['preds']['labels'])
  shown = min(len(wrong), config.get('num_misclassified_show', len(wrong)))
  return section('Misclassified test images',
                 f'{len(wrong):,} of {res["num_test"]:,} test images '
                 f'({analysis.pct(len(wrong) / max(res["num_test"], 1))}) were '
                 f'misclassified; the first {shown} are shown with their true and predicted '
                 'classes.',
                 _figure_or_note(figs, 'misclassified', 'misclassified test images'))


def _conclusions_section(findings):
  """The findings (sentences) as a list."""
  return section('Conclusions', Raw('<ul class="conc">' + ''.join(
      f'<li>{html.escape(c)}</li>' for c in findings) + '</ul>'))


def _network(res):
  """The run's network in words, from what its model declared in results.json."""
  if 'model_architecture' in res:
    return (f'a neural network (model {res["model"]!r}, {res["model_description"]}: '
            f'{res["model_architecture"]})')
  return f'an MLP (hidden layers {comparison.model_description(res)})'  # Saved before.


def run_sections(run, figs, cm):
  """The sections of a run's page, in order (RUN_SECTIONS)."""
  res = run['res']
  return [
      section('Goal', _goal(res['dataset'], _network(res))),
      _results_section(run),
      _config_section(run['config']),
      section('Model summary', Raw(f'<pre>{html.escape(run["summary"])}</pre>')),
      section('Training samples', _figure_or_note(figs, 'samples', 'first training images')),
      section('Accuracy and loss curves', img(figs['curves'], 'accuracy and loss per epoch')),
      _recognized_section(res, figs),
      _misclassified_section(run, figs),
      section('Confusion matrix', img(figs['confusion'], 'confusion matrix'),
              'Rows: the true class; columns: the predicted one. Colour on a log scale, so '
              'that the few errors show beside the diagonal.'),
      section('Per-class accuracy', per_class_table(cm, res['class_names'])),
      _conclusions_section(analysis.conclusions(run, cm)),
      section(drawing_pad.TITLE, Raw(drawing_pad.html(run['workdir']))),
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
  text = page(f'{res["name"]} on {_title(res["dataset"])}',
              f'digits_jax run report - {os.path.abspath(workdir)}',
              run_sections(run, figs, cm),
              f'Written by digits_jax.report from the files in this folder. {versions}')
  path = os.path.join(workdir, REPORT)
  results_lib.write_text(path, text)
  return path


# --------------------------------------------------------------------------- sweep report


def _sweep_tables(sweep_dir, runs):
  """One comparison table per dataset; variant names link to the runs' own reports."""
  parts = []
  names, differs = comparison.labels(runs), comparison.differing_fields(runs)
  titles = {k: t for k, t in COMPARISON_TITLES.items() if k != 'differs' or any(differs.values())}
  for dataset in sorted({r['dataset'] for r in runs.values()}, key=analysis.dataset_key):
    rows = []
    for workdir, res in runs.items():
      if res['dataset'] != dataset:
        continue
      cells = dict(comparison.formatted(comparison.comparison_row(res)),
                   variant=names[workdir], differs=differs[workdir])
      if os.path.exists(os.path.join(workdir, REPORT)):
        link = f'{os.path.basename(workdir)}/{REPORT}'
        cells['variant'] = Raw(f'<a href="{html.escape(link)}">{html.escape(names[workdir])}</a>')
      rows.append([cells[k] for k in titles])
    parts.append(Raw(f'<h3>{html.escape(_title(dataset))}</h3>'))
    parts.append(table(list(titles.values()), rows, left=tuple(
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
    parts.append(Raw(f'<h3>{html.escape(_title(dataset))}</h3>'))
    parts.append(table(['variant', 'seeds', 'mean', f'{reference_label}', 'difference [95%]',
                        'Welch p', 'Holm p', f'p_holm < {significance.ALPHA}'], body,
                       left=(0,)))
  return parts


def write_sweep_report(sweep_dir):
  """Writes comparison.csv/md, significance.csv and report.html comparing a sweep's runs.

  Args:
    sweep_dir: a folder whose subfolders are runs (each with results.json when finished).

  Returns:
    The path of sweep_dir/report.html.
  """
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
  path = lambda key: os.path.join(sweep_dir, SWEEP_FIGURES[key])
  vary_cells = comparison.vary_cells(cells, vary) if vary and cells else []
  if rows:
    figures.sweep_means(cells, path('means'), input_pipeline.DATASET_TITLES)
    figures.sweep_accuracy_vs_params(
        [dict(r, variant=names[w], test_accuracy=r['test_accuracy_mean'])
         for r, w in zip(rows, runs)], path('params'), input_pipeline.DATASET_TITLES)
    figures.sweep_val_curves(
        [(res['dataset'], names[w], comparison.first_seed(results_lib.read_history(w)))
         for w, res in runs.items()
         if os.path.exists(os.path.join(w, results_lib.FILES['history']))],
        path('curves'), input_pipeline.DATASET_TITLES)
    if vary_cells:
      figures.vary_effect(vary_cells, list(vary)[0], path('vary'),
                          input_pipeline.DATASET_TITLES)
  plot = lambda key, alt: img(path(key), alt) if rows and is_png(path(key)) else 'No runs.'
  datasets = sorted({r['dataset'] for r in rows}, key=analysis.dataset_key)
  titles = ', '.join(_title(d) for d in datasets)
  values = '; '.join(f'{f}: {", ".join(map(str, v))}' for f, v in vary.items())
  swept = os.path.exists(os.path.join(sweep_dir, comparison.FILES['info']))  # By the sweep.
  what = (f'the values of {" x ".join(vary)} ({values}) around a base config' if vary
          else 'the variants of the lab (table 1)' if swept
          else 'the runs in this folder (each named by its folder)')
  sections = [
      section('Goal', _goal(datasets[0] if len(datasets) == 1 else None),
              f'This page compares {what}{" trained in this sweep" if swept else ""}. '
              'Each cell (a config on a '
              'dataset) holds one test accuracy per seed; every number comes with its '
              'spread, and a difference is called one only where it holds.'),
      section('Comparison table', *_sweep_tables(sweep_dir, runs),
              'Mean, sample std, 95% t-interval, min and max of the test accuracy over '
              'the seeds of each cell; train s: the cell\'s training, all seeds together. '
              f'The exact values, with seed 0\'s own numbers, are in {comparison.FILES["csv"]}.'),
      section('Mean test accuracy over seeds',
              plot('means', 'mean test accuracy and 95% interval per config')),
      section('Significance', *_significance_tables(sig, reference_label),
              f'Each cell against {reference_label} on the same dataset: the difference of '
              "the mean test accuracies with its 95% Welch interval, Welch's t-test "
              "p-value (unequal variances), and that p-value Holm-adjusted over the "
              f'dataset\'s comparisons. Exact values: {comparison.FILES["significance"]}.'
              if sig else 'No reference cell to compare with in this folder.'),
  ]
  if vary:
    sections.append(section(VARY_SECTION, plot('vary', 'test accuracy and train seconds '
                                               'against the varied value')
                            if vary_cells else 'The plot needs numeric values.'))
  sections += [
      section('Test accuracy vs parameter count', plot('params', 'test accuracy vs parameters')),
      section('Validation accuracy curves', plot('curves', 'validation accuracy per epoch'),
              'Seed 0 of each cell.' if any(len(c['values']) > 1 for c in cells) else ''),
      _conclusions_section(significance.conclusions(sig, cells, reference_label,
                                                    input_pipeline.DATASET_TITLES)),
  ]
  text = page(f'Sweep: {len(rows)} cells ({titles or "none"})',
              f'digits_jax sweep report - {os.path.abspath(sweep_dir)}', sections,
              'Written by digits_jax.report from the runs in this folder.')
  out = os.path.join(sweep_dir, REPORT)
  results_lib.write_text(out, text)
  return out


def is_sweep_dir(folder):
  """A sweep folder: no results.json of its own, but subfolders holding one."""
  return (not os.path.exists(os.path.join(folder, results_lib.FILES['results']))
          and bool(comparison.run_folders(folder)))


def warn_unreadable_runs(sweep_dir):
  """One `warning:` line on stderr per run of the sweep that its report leaves out; a
  UserError if that is every run."""
  unreadable = comparison.unreadable_runs(sweep_dir)
  for reason in unreadable.values():
    print(f'warning: left out of the sweep report: {reason}', file=sys.stderr, flush=True)
  if unreadable and len(unreadable) == len(comparison.run_folders(sweep_dir)):
    raise errors.UserError(f'{sweep_dir}: no run there can be read (each is named above); '
                           'rerun the sweep\'s command to rewrite their result files.')


def main(argv):
  """Writes the report of --workdir (a run or a sweep folder) and prints its path."""
  cli.no_arguments(argv)
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs at INFO when the pad loads weights.
  folder = flags.FLAGS.workdir
  with cli.one_line(folder):
    if is_sweep_dir(folder):
      warn_unreadable_runs(folder)
      print(write_sweep_report(folder))
    else:
      print(write_run_report(folder))


if __name__ == '__main__':
  # Defined here, not on import: train.py imports this module and main.py owns --workdir.
  flags.DEFINE_string('workdir', None, 'A run folder, or a sweep folder of runs.',
                      required=True)
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, __doc__))
