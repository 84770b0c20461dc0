"""The sweep on tiny data: three configs trained, a rerun skips them, an interrupted run
resumes from its checkpoint, and the comparison table holds each run's own numbers."""

import contextlib
import csv
import html
import io
import os
import re
import shutil
import subprocess
import sys
import threading

import pytest

from digits_jax import comparison
from digits_jax import figures
from digits_jax import preemption
from digits_jax import html_page
from digits_jax import sweep_report
from digits_jax import outputs
from digits_jax import results as results_lib
from digits_jax import stats
from digits_jax import sweep
from digits_jax import train
from digits_jax import workdir as workdir_lib

import test_report  # pylint: disable=g-bad-import-order  (its page check script)
from helpers import BROWSER, chromium

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ('default', 'v1', 'v2')


def tiny_overrides(data_dir, num_epochs=2):
  """--override strings that shrink the lab's configs to the tiny data."""
  return [f'data_dir={data_dir}', 'verify_checksums=false', 'hidden_units=16',
          f'num_epochs={num_epochs}', 'num_show=4', 'num_misclassified_show=2',
          'progress_bar=false', 'tensorboard=false']


def quiet(fn, *args, **kwargs):
  """Calls fn, returning (its result, what it printed)."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    result = fn(*args, **kwargs)
  return result, out.getvalue()


@pytest.fixture(scope='module')
def swept(tiny_data, tmp_path_factory):
  """A sweep of three configs where v1 was interrupted after its first epoch."""
  sweep_dir = str(tmp_path_factory.mktemp('sweep'))
  v1_dir = os.path.join(sweep_dir, 'v1_mnist')
  # The interrupted run: one epoch finished and checkpointed, results.json not yet written.
  config = sweep.load_config('v1', 'mnist', tiny_overrides(tiny_data, num_epochs=2))
  config.num_epochs = 1
  quiet(train.train_and_evaluate, config, v1_dir)
  os.remove(os.path.join(v1_dir, 'results.json'))
  first_epoch = results_lib.read_history(v1_dir)
  status, log = quiet(sweep.run_sweep, CONFIGS, ['mnist'], sweep_dir, tiny_overrides(tiny_data))
  return {'dir': sweep_dir, 'status': status, 'log': log, 'v1_first_epoch': first_epoch,
          'data': tiny_data}


def workdir(swept, name):
  return os.path.join(swept['dir'], f'{name}_mnist')


def test_each_config_runs_in_its_own_workdir(swept):
  assert swept['status'] == {workdir(swept, 'default'): 'trained',
                             workdir(swept, 'v1'): 'resumed',
                             workdir(swept, 'v2'): 'trained'}
  for name in CONFIGS:
    res = results_lib.read_json(os.path.join(workdir(swept, name), 'results.json'))
    assert (res['name'], res['dataset'], res['num_epochs']) == (name, 'mnist', 2)
    assert len(results_lib.read_history(workdir(swept, name))) == 2


def test_interrupted_run_resumes_from_its_checkpoint(swept):
  history = results_lib.read_history(workdir(swept, 'v1'))
  assert history[:1] == swept['v1_first_epoch']  # Same seconds too: epoch 1 was not redone.
  steps_per_epoch = -(-540 // 30)  # 600 images less 10% validation, batch 30.
  assert f'Resumed from the checkpoint at step {steps_per_epoch} (epoch 1 done)' in swept['log']
  assert swept['log'].count('Resumed from the checkpoint') == 1
  assert 'Epoch 1/2' not in swept['log'].split('[2/3] v1 mnist: resuming')[1].split('[3/3]')[0]


def test_each_run_is_announced_with_its_place_in_the_sweep(swept):
  for line in (f'[1/3] default mnist: training in {workdir(swept, "default")}.',
               f'[2/3] v1 mnist: resuming in {workdir(swept, "v1")}.',
               f'[3/3] v2 mnist: training in {workdir(swept, "v2")}.'):
    assert line in swept['log']


def test_comparison_table_holds_each_runs_results(swept):
  with open(os.path.join(swept['dir'], 'comparison.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  assert tuple(rows[0]) == comparison.COMPARISON_FIELDS
  assert [r['variant'] for r in rows] == list(CONFIGS)
  for row in rows:
    res = results_lib.read_json(os.path.join(workdir(swept, row['variant']), 'results.json'))
    assert row['dataset'] == res['dataset']
    assert row['model'] == res['model_description'] == {'v1': '16 x 16'}.get(row['variant'], '16')
    for field, key in (('params', 'num_params'), ('epochs', 'num_epochs'),
                       ('batch', 'batch_size'), ('misclassified', 'misclassified_count')):
      assert int(row[field]) == res[key], field
    for field in ('validation_split', 'best_val_accuracy', 'final_val_accuracy',
                  'test_accuracy', 'test_loss'):
      assert float(row[field]) == res[field], field
    assert float(row['train_seconds']) == res['timings']['train_seconds']
    # One seed per cell here: its own value, no interval.
    assert int(row['n']) == 1 and float(row['test_accuracy_mean']) == res['test_accuracy']
    assert row['test_accuracy_ci95_low'] == row['test_accuracy_ci95_high'] == ''
  md = open(os.path.join(swept['dir'], 'comparison.md')).read()
  assert '\n| default_mnist | default |  | mnist | 16 | 12,730 | 2 | 32 | 20% |' in md
  assert '\n| v1_mnist | v1 |  | mnist | 16 x 16 | 13,002 | 2 | 30 | 10% |' in md
  assert all(row['run'] == f'{row["variant"]}_mnist' and row['differs'] == '' for row in rows)


def test_sweep_report(swept):
  text = open(os.path.join(swept['dir'], html_page.REPORT), encoding='utf-8').read()
  assert tuple(re.findall(r'<h2>(.*?)</h2>', text)) == sweep_report.SWEEP_SECTIONS
  srcs = re.findall(r'<img [^>]*src="([^"]*)"', text)
  assert len(srcs) == 3 and all(s.startswith('data:image/png;base64,') for s in srcs)
  assert all(f'>{name}<' in text for name in CONFIGS)
  assert 'one seed per cell, so no interval and no test' in text
  with open(os.path.join(swept['dir'], 'significance.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  assert [(r['variant'], r['reference'], r['p_value']) for r in rows] == [
      ('v1', 'default', ''), ('v2', 'default', '')]


def test_every_runs_figures_and_report_are_written_when_the_sweep_returns(swept):
  for name in CONFIGS:
    for file in (*figures.FILES.values(), html_page.REPORT):
      assert os.path.getsize(os.path.join(workdir(swept, name), file)) > 0, (name, file)


@pytest.mark.slow
def test_outputs_are_drawn_in_the_background_and_their_failure_reported(tmp_path,
                                                                          monkeypatch):
  """With background_outputs, each run's outputs are written by the worker thread after
  its run returned (while the next trains); a failure there marks that run failed and the
  others go on."""
  events = []

  def fake_train(config, workdir, write_outputs):
    events.append(('trained', config.name))
    write_outputs(config, workdir, data=None, summary_writer=None, res=None)
    events.append(('returned', config.name))

  def fake_write_outputs(config, workdir, data, *, summary_writer, res):
    del workdir, data, summary_writer, res
    assert threading.current_thread() is not threading.main_thread()
    events.append(('drawn', config.name))
    if config.name == 'v1':
      raise ValueError('no room for the legend')

  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  monkeypatch.setattr(outputs, 'write_outputs', fake_write_outputs)
  monkeypatch.setattr(sweep_report, 'write_sweep_report', lambda d: events.append(('report',)))
  with pytest.raises(sweep.SweepError, match='v1_mnist: failed: writing its outputs: '
                     'ValueError: no room for the legend') as error:
    quiet(sweep.run_sweep, CONFIGS, ['mnist'], str(tmp_path), [], background_outputs=True)
  assert 'default_mnist' not in str(error.value) and 'v2_mnist' not in str(error.value)
  for name in CONFIGS:
    assert events.index(('returned', name)) < events.index(('drawn', name))
  assert events[-1] == ('report',)  # After every output was written.


@pytest.mark.slow
def test_a_stopped_sweep_still_writes_the_finished_runs_outputs(tmp_path, monkeypatch):
  drawn = []

  def fake_train(config, workdir, write_outputs):
    if config.name == 'v1':
      raise preemption.StopRequested('SIGTERM received', signum=15)
    write_outputs(config, workdir, data=None, summary_writer=None, res=None)

  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  monkeypatch.setattr(outputs, 'write_outputs',
                      lambda config, *a, **k: drawn.append(config.name))
  with pytest.raises(preemption.StopRequested):
    quiet(sweep.run_sweep, CONFIGS, ['mnist'], str(tmp_path), [], background_outputs=True)
  assert drawn == ['default']


def test_rerun_skips_finished_runs(swept):
  mtimes = {n: os.stat(os.path.join(workdir(swept, n), 'results.json')).st_mtime_ns
            for n in CONFIGS}
  cmd = [sys.executable, '-m', 'digits_jax.sweep', f'--configs={",".join(CONFIGS)}',
         '--datasets=mnist', f'--sweep_dir={swept["dir"]}']
  cmd += [f'--override={o}' for o in tiny_overrides(swept['data'])]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                        check=False, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count('skipped.') == 3, proc.stdout
  assert '3 runs: 0 trained, 0 resumed, 3 skipped, 0 failed' in proc.stdout
  assert 'Epoch ' not in proc.stdout
  assert mtimes == {n: os.stat(os.path.join(workdir(swept, n), 'results.json')).st_mtime_ns
                    for n in CONFIGS}


def test_a_changed_setting_is_not_skipped(swept, tmp_path, monkeypatch):
  sweep_dir = str(tmp_path / 'copy')
  shutil.copytree(swept['dir'], sweep_dir)
  saved = os.path.join(sweep_dir, 'v2_mnist', 'config.json')
  results_lib.write_json(saved, {**results_lib.read_json(saved), 'test_indices': [4]})
  calls = []
  monkeypatch.setattr(train, 'train_and_evaluate', lambda c, w, **_: calls.append((c.name, w)))
  status, _ = quiet(sweep.run_sweep, CONFIGS, ['mnist'], sweep_dir,
                    tiny_overrides(swept['data']))
  assert calls == [('v2', os.path.join(sweep_dir, 'v2_mnist'))]
  assert sorted(status.values()) == ['resumed', 'skipped', 'skipped']


def test_bad_override_fails_before_any_training(tmp_path, monkeypatch):
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a: pytest.fail('trained'))
  with pytest.raises(sweep.SweepError, match='no field'):
    sweep.run_sweep(CONFIGS, ['mnist'], str(tmp_path), ['no_such_field=1'])
  with pytest.raises(sweep.SweepError, match='expected int'):
    sweep.run_sweep(CONFIGS, ['mnist'], str(tmp_path), ['num_epochs=1.5'])
  with pytest.raises(sweep.SweepError, match='unknown dataset'):
    sweep.run_sweep(CONFIGS, ['mnist'], str(tmp_path), ['v2:num_epochs=1'])
  with pytest.raises(sweep.SweepError, match='no file'):
    sweep.run_sweep(['v99'], ['mnist'], str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_overrides_take_the_fields_type():
  config = sweep.load_config('v6', 'fashion_mnist', [
      'num_epochs=3', 'learning_rate=1e-2', 'progress_bar=False', 'test_indices=(1, 2)',
      'kernel_init=lecun_normal', 'validation_split=0', 'mnist:batch_size=7',
      'fashion_mnist:hidden_units=20'])
  assert config.num_epochs == 3 and isinstance(config.num_epochs, int)
  assert config.learning_rate == 0.01 and config.validation_split == 0.0
  assert isinstance(config.validation_split, float)
  assert config.progress_bar is False and config.test_indices == (1, 2)
  assert config.kernel_init == 'lecun_normal'
  assert config.batch_size == 5 and config.hidden_units == 20  # mnist: override not applied.
  assert sweep.load_config('v1', 'mnist', ['test_indices=4']).test_indices == (4,)


@pytest.mark.slow
def test_a_failed_run_does_not_stop_the_others(tmp_path, monkeypatch, tiny_data):
  calls = []

  def fake_train(config, workdir, **_):
    calls.append(config.name)
    if config.name == 'v1':
      raise workdir_lib.WorkdirMismatchError(f'{workdir} holds a run of a different config')

  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  with pytest.raises(sweep.SweepError, match='v1_mnist: failed: .* different config'):
    quiet(sweep.run_sweep, CONFIGS, ['mnist'], str(tmp_path), tiny_overrides(tiny_data))
  assert calls == list(CONFIGS)
  assert os.path.exists(tmp_path / html_page.REPORT)  # Written before the error is raised.


SEEDS = {'default': [0.90, 0.91, 0.92, 0.905], 'v1': [0.95, 0.96, 0.955, 0.965],
         'v2': [0.91, 0.90, 0.915, 0.92]}


@pytest.fixture(scope='module')
def multi_seed(swept, tmp_path_factory):
  """The swept folder with each results.json given four seeds (issue 13's fields)."""
  sweep_dir = str(tmp_path_factory.mktemp('seeds') / 'sweep')
  shutil.copytree(swept['dir'], sweep_dir)
  for name, values in SEEDS.items():
    path = os.path.join(sweep_dir, f'{name}_mnist', 'results.json')
    res = results_lib.read_json(path)
    res.update(test_accuracy=values[0], seeds=[0, 1, 2, 3],
               per_seed={'test_accuracy': values, 'test_loss': [0.3] * 4})
    results_lib.write_json(path, res)
  sweep_report.write_sweep_report(sweep_dir)
  return sweep_dir


@pytest.mark.slow
def test_comparison_table_holds_each_cells_seeds(multi_seed):
  with open(os.path.join(multi_seed, 'comparison.csv'), newline='') as f:
    rows = {r['variant']: r for r in csv.DictReader(f)}
  for name, values in SEEDS.items():
    res = results_lib.read_json(os.path.join(multi_seed, f'{name}_mnist', 'results.json'))
    row, s = rows[name], stats.summarize(values)
    assert int(row['n']) == 4
    for key in ('mean', 'std', 'min', 'max'):
      assert float(row[f'test_accuracy_{key}']) == pytest.approx(s[key]), key
    assert [float(row['test_accuracy_ci95_low']),
            float(row['test_accuracy_ci95_high'])] == pytest.approx(s['ci95'])
    assert float(row['test_accuracy']) == values[0]  # Seed 0's own, as in results.json.
    assert float(row['train_seconds_per_seed']) == pytest.approx(
        res['timings']['train_seconds'] / 4)


@pytest.mark.slow
def test_significance_and_conclusions_from_the_seeds(multi_seed):
  with open(os.path.join(multi_seed, 'significance.csv'), newline='') as f:
    rows = {r['variant']: r for r in csv.DictReader(f)}
  assert set(rows) == {'v1', 'v2'}
  for name in rows:
    w = stats.welch(SEEDS[name], SEEDS['default'])
    assert float(rows[name]['difference']) == pytest.approx(w['difference'])
    assert float(rows[name]['p_value']) == pytest.approx(w['p_value'])
    assert [float(rows[name]['ci95_low']), float(rows[name]['ci95_high'])] == pytest.approx(
        w['ci95'])
  holm = stats.holm([float(rows['v1']['p_value']), float(rows['v2']['p_value'])])
  assert [float(rows['v1']['p_holm']), float(rows['v2']['p_holm'])] == pytest.approx(holm)
  assert rows['v1']['significant'] == 'True' and rows['v2']['significant'] == 'False'
  text = html.unescape(open(os.path.join(multi_seed, html_page.REPORT), encoding='utf-8').read())
  assert 'v1 is better than the default config on MNIST: +4.87 pt [' in text
  assert 'p<0.001 (Holm-adjusted)' in text
  assert 'v2: no significant difference from the default config on MNIST at n=4' in text
  assert re.findall(r'<h2>(.*?)</h2>', text) == list(sweep_report.SWEEP_SECTIONS)


@pytest.mark.slow
def test_vary_sweep_plots_the_effect(tiny_data, tmp_path):
  sweep_dir = str(tmp_path / 'width')
  status, log = quiet(sweep.run_sweep, (), ['mnist'], sweep_dir,
                      tiny_overrides(tiny_data, num_epochs=1),
                      vary=sweep.parse_vary(['hidden_units=8,16']))
  cells = [os.path.join(sweep_dir, f'hidden_units-{h}_mnist') for h in (8, 16)]
  assert status == {c: 'trained' for c in cells}
  assert [results_lib.read_json(os.path.join(c, 'results.json'))['model_description']
          for c in cells] == ['8', '16']
  # The tiny overrides set the base's hidden_units to 16: that cell is the reference.
  assert results_lib.read_json(os.path.join(sweep_dir, 'sweep.json')) == {
      'reference': 'hidden_units=16', 'vary': {'hidden_units': ['8', '16']}}
  with open(os.path.join(sweep_dir, 'significance.csv'), newline='') as f:
    assert [(r['variant'], r['reference']) for r in csv.DictReader(f)] == [
        ('hidden_units=8', 'hidden_units=16')]
  text = open(os.path.join(sweep_dir, html_page.REPORT), encoding='utf-8').read()
  sections = list(sweep_report.SWEEP_SECTIONS)
  sections.insert(sections.index('Significance') + 1, sweep_report.VARY_SECTION)
  assert re.findall(r'<h2>(.*?)</h2>', text) == sections
  assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', text)) == 4
  assert 'the base (hidden_units=16)' in text
  assert re.search(r'\[sweep\] wall time [\d.]+ s for [\d.]+ s of training and [\d.]+ s of '
                   r'compiling in the runs trained here \(wall / training: [\d.]+x\)\.', log)


@pytest.mark.parametrize('vary,message', [
    (['hidden_units'], 'expected FIELD=V1,V2'), (['no_field=1,2'], 'no field'),
    (['hidden_units=1', 'hidden_units=2'], 'given twice'), (['hidden_units=1.5'], 'expected int')])
def test_bad_vary_fails_before_training(tmp_path, monkeypatch, vary, message):
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a: pytest.fail('trained'))
  with pytest.raises(sweep.SweepError, match=message):
    sweep.run_sweep((), ['mnist'], str(tmp_path), vary=sweep.parse_vary(vary))
  assert os.listdir(tmp_path) == []


def sweep_cli(*args):
  return subprocess.run([sys.executable, '-m', 'digits_jax.sweep', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})


def test_report_only_and_flag_errors(swept, tmp_path):
  sweep_dir = str(tmp_path / 'copy')
  shutil.copytree(swept['dir'], sweep_dir)
  os.remove(os.path.join(sweep_dir, html_page.REPORT))
  proc = sweep_cli(f'--sweep_dir={sweep_dir}', '--report_only')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Epoch' not in proc.stdout and os.path.exists(os.path.join(sweep_dir, html_page.REPORT))
  proc = sweep_cli(f'--sweep_dir={tmp_path / "empty"}', '--report_only')
  assert proc.returncode == 1 and '--report_only: no finished runs under' in proc.stderr
  proc = sweep_cli('--configs=v1', '--vary=hidden_units=8,16', f'--sweep_dir={tmp_path}')
  assert proc.returncode == 1 and 'leave out --configs' in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason='needs Chromium (apt-get install chromium)')
def test_sweep_report_renders_in_a_browser(multi_seed, tmp_path):
  """Every figure (the mean +- interval one included) loads; the significance table is there."""
  text = open(os.path.join(multi_seed, html_page.REPORT), encoding='utf-8').read()
  checked = tmp_path / 'checked.html'
  checked.write_text(text.replace('</body>', test_report.CHECK_SCRIPT), encoding='utf-8')
  proc = chromium('--dump-dom', '--virtual-time-budget=5000', f'file://{checked}',
                               user_data_dir=tmp_path / 'profile')
  body = re.search(r'<body([^>]*)>', proc.stdout)
  assert body, proc.stderr[-2000:]
  attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
  assert attrs.get('images-ok') == 'true' and attrs['images'] == '3', attrs
  assert tuple(attrs['headings'].split('|')) == sweep_report.SWEEP_SECTIONS
  assert '<th>Holm p</th>' in proc.stdout and '<th>95% interval</th>' in proc.stdout


@pytest.mark.parametrize('vary', [['data_dir=/a,/b'], ['name=../../../x,..'],
                                  ['data_dir=<script>/x,a\\b']])
def test_vary_values_never_become_paths(tmp_path, vary):
  """Issue 21 item 8: each cell is one safe folder directly inside the sweep folder."""
  runs, _ = sweep.vary_plan(os.path.join(REPO, 'configs', 'default.py'), ['mnist'],
                            str(tmp_path), sweep.parse_vary(vary))
  assert len(runs) == 2
  for workdir, _ in runs:
    assert os.path.dirname(workdir) == str(tmp_path) and not os.path.basename(
        workdir).startswith('.') and workdir_lib.path_problem(workdir) is None


def test_unknown_dataset_is_refused_before_any_cell(tmp_path, monkeypatch):
  """Issue 21 item 7: as --configs=nope is."""
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a, **k: pytest.fail('trained'))
  with pytest.raises(sweep.SweepError, match=r"--datasets: unknown 'cifar'; use one or more "
                     'of mnist, fashion_mnist'):
    sweep.run_sweep(('default',), ['mnist', 'cifar'], str(tmp_path))
  with pytest.raises(sweep.SweepError, match="--datasets: unknown 'cifar'"):
    sweep.run_sweep((), ['cifar'], str(tmp_path), vary={'hidden_units': ['8']})
  assert os.listdir(tmp_path) == []


def test_a_bad_vary_value_names_vary():
  """Issue 21 item 6: not --override."""
  with pytest.raises(sweep.SweepError, match=r"^--vary 'hidden_units=a': expected int"):
    sweep.vary_plan(os.path.join(REPO, 'configs', 'default.py'), ['mnist'], 'S',
                    sweep.parse_vary(['hidden_units=a,b']))
  with pytest.raises(sweep.SweepError, match=r"no field 'hiden_units'\. Did you mean "
                     '"hidden_units"'):
    sweep.load_config('default', 'mnist', ['hiden_units=3'])


@pytest.mark.slow  # Two processes that import jax.
def test_help_exits_0_and_a_bad_flag_is_one_line(tmp_path):
  proc = sweep_cli('--help')
  assert proc.returncode == 0 and '--vary' in proc.stdout and 'Runs many' in proc.stdout
  proc = sweep_cli('--num_seeds=x', f'--sweep_dir={tmp_path}')
  assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
      "error: flag --num_seeds=x: invalid literal for int() with base 10: 'x'. See --help for "
      'the flags and their values.']
