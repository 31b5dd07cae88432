"""BLAS's threads, held to one where a result must not depend on how many there are (a product
split over several threads can round differently), found once: finding the libraries costs
milliseconds, setting their limit microseconds."""

from __future__ import annotations

import functools


@functools.cache
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread():
    """A context in which every BLAS this process has loaded uses one thread."""
    return _controller().limit(limits=1, user_api="blas")
