"""The paper's experimental protocol (SPEC.md §4), one module per step:

- :mod:`~adaptopt.experiments.trainer`: ``train(TrainConfig(...), run_dir)``, one run;
- :mod:`~adaptopt.experiments.sweep`: ``sweep("grid.toml", out_dir)``, grid search on the
  validation split, best setting per optimizer;
- :mod:`~adaptopt.experiments.seeds`: ``run_seeds(settings, out_dir, seeds=5)``, retraining;
- :mod:`~adaptopt.experiments.report`: ``make_report([out_dir], report_dir)``, Table 1,
  curves with 95% t-intervals, heatmaps, smoothness plots;
- :mod:`~adaptopt.experiments.demo`: ``run_demo()``, the small study behind ``adaptopt demo``.

They share nothing but run directories (:mod:`~adaptopt.experiments.rundir`).
"""
