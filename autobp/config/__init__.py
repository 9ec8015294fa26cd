"""What a config may say: the catalog of names, the config models, and reading YAML into them."""
