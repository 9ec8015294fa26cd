"""Many trials: sweep files and planning, the sweep directory and its ranking, executors, the search."""

EXECUTORS = ("local", "dask")  # where trials run: worker processes here (executor.py), a Dask cluster (cluster.py)
