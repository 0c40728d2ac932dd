"""The HTML report of one or more results folders (``sharpbench report``).

* :mod:`bench.report.data`: typed data behind the figures, from rows and leaderboard standings;
* :mod:`bench.report.studies`: Optuna studies rebuilt from the search rows, with importances;
* :mod:`bench.report.palette`: one colour and marker per method, fixed by its name;
* :mod:`bench.report.reference`: your run against reference results (``--reference``);
* :mod:`bench.report.figures`: one matplotlib figure per function;
* :mod:`bench.report.page`: the self-contained HTML page;
* :mod:`bench.report.build`: :func:`build_report`, which ties them together.

Import :func:`bench.report.build.build_report` from its module: importing this package does not
load matplotlib or Optuna.
"""
