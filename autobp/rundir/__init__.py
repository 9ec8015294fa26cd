"""The run directory: its layout, summary, checkpoint, histograms, and the reader every tool uses."""
