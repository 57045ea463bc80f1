"""Shared test set-up: pytester for end-to-end runs of the plugin in a subprocess."""

pytest_plugins = ["pytester"]
