"""Benchmarks (``cti bench``): each measures the product from outside, on seeded data.
Above the product packages, below the ``cti`` command that runs them."""
