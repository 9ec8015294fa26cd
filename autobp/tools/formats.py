"""The output formats of the commands that read run directories, one list per command.

Read by the renderers and by the CLI, whose choices (and their shell completion) they are; this module imports
nothing, so `autobp --help` stays fast.
"""

from __future__ import annotations

DOCUMENT = ("text", "markdown", "json")  # report, compare, runs: a terminal, notes and issues, scripts
REPORT = (*DOCUMENT, "html")  # report also writes a self-contained interactive page
GRAPH = ("svg", "dot", "html")
EXPORT = ("onnx", "tensorboard")
