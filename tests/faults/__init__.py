"""Fault tests: the product as real processes on loopback, a fault injected, what users see."""
