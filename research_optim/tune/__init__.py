"""Tuning as a protocol: ``python -m research_optim.tune`` (see docs/tuning.md).

A budget of trials per optimizer and task, sampled (Sobol QMC by default, TPE as an option) from a search space
kept as config, selected on a validation split held out from training on the tuning seeds, then re-run on fresh
confirmation seeds; the result is a ``selection.json`` the report reads. The study lives in Optuna journal storage
inside the sweep directory, so any number of workers (here, or SLURM jobs) share it. A trial is a run: its run
identity makes duplicates impossible, and a trial whose worker died is taken over and resumed, never lost or
counted twice.

``space.py`` the search space · ``sampler.py`` Sobol points in it · ``study.py`` the shared study, claiming trials ·
``protocol.py`` trials, selection, confirmation · ``selection.py`` the best trial, its edges, selection.json ·
``app.py`` the command: checks at the door, then work here or submit SLURM workers.
"""
