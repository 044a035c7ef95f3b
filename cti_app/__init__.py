"""The assembly: the ``cti`` command, the running stack and the demo wire every package
together. The top layer: it may import everything, nothing imports it."""
