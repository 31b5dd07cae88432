"""Shipped training configs (TOML), importable as mnist_softmax.configs for importlib.resources."""
