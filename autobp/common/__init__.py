"""Shared utilities at the bottom of the layers: errors and exit codes, process settings, text, files."""
