"""Commands that read run directories: reports, comparisons, predictions, plots, exports, the graph."""
