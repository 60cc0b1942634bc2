"""`multiverse view RUN_DIR`: one self-contained HTML page of an eval run (page.py, tree.py, plots.py, static/)."""
