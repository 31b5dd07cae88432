"""mnist-softmax: softmax classification on MNIST with nothing but NumPy."""

__version__ = "0.1.0"
