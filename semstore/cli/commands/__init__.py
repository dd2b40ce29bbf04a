"""The CLI's commands, one module per family; :mod:`semstore.cli.app` registers them."""
