"""Reports built only from stored result files: leaderboards (and, later, plots and HTML)."""
