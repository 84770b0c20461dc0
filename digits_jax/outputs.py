"""A finished run's outputs drawn from its saved results: figures, TensorBoard, report.

Above results.py in the house: results.py writes the result files, this module draws
everything made from them (figures.py, summaries.py, run_report.py), so that no module
below needs to import one above it. train.py calls `write_outputs` at the end of a run;
a sweep hands it to sweep_outputs.py, whose worker process draws it while the next run trains.
"""

from digits_jax import figures
from digits_jax import html_page
from digits_jax import parallel
from digits_jax import results as results_lib
from digits_jax import run_report
from digits_jax import summaries


def drawn_file_names():
  """Names of what `write_outputs` writes: figures, the report and TensorBoard's folder."""
  return {*figures.FILES.values(), html_page.REPORT, summaries.LOGDIR}


def run_file_names():
  """Names of what a run writes into its workdir besides checkpoints: result files and
  what is drawn from them."""
  return {*results_lib.FILES.values(), *drawn_file_names()}


def write_outputs(config, workdir, data, *, summary_writer=None, res=None):
  """The figures, TensorBoard summaries and report page, drawn from the saved results.

  `summary_writer`: the run's open summaries.RunWriter, which gets the test values and
  figures (else, with config.tensorboard, the event file is rebuilt from the results)."""
  if not parallel.is_main_process():
    return
  figures.draw_all(workdir, config, data.train_images, data.train_labels, data.test_images,
                   data.class_names)
  if summary_writer:
    summary_writer.finish(res, res['epochs_trained'])
  elif config.tensorboard:
    summaries.write_run_summaries(workdir)
  if config.write_report:
    run_report.write_run_report(workdir)
