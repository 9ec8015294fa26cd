"""Many trials: sweep files and planning, the sweep directory and its ranking, executors, the search."""
