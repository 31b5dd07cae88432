"""mnist-softmax: softmax classification on MNIST with nothing but NumPy.

The Python API (docs/api.md): load_mnist, load_config, Config, fit, load_model, read_digit,
classify, score, export_onnx. Importing the package imports none of the machinery: each name is
resolved when first used.
"""

__version__ = "0.1.0"
__all__ = ["Config", "classify", "export_onnx", "fit", "load_config", "load_mnist", "load_model", "read_digit", "score"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'mnist_softmax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
