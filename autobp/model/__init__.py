"""From a config to data and a network on the engine, and the one pipeline that prepares a run."""
