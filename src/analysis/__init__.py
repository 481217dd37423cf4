"""Analyses of trained networks and search runs: block importance (the paper's Fig. 2), the
hourglass picture of an architecture, the HTML report of a search run, and the ablation runner.
``analyze.py`` at the repository root is their command line."""
