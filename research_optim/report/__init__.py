"""Reports: load local run directories (:mod:`.runs`) and turn them into tables (:mod:`.analysis`).

Everything here is a pure function of the files a run leaves behind (``config.yaml``, ``metrics.jsonl``,
``summary.json``), so a report can be regenerated at any time from any copy of the output directory.
"""


class ReportError(ValueError):
    """Bad input to a report (no runs, an ambiguous baseline, a bad selection file): one line for the user."""
