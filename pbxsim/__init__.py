"""The built-in PBX simulator: real AMI on a socket, shaped like Asterisk 22's own traffic.

``scenarios`` builds one call's events (pure), ``server`` speaks AMI and plays them,
``traffic`` keeps calls coming (live) or renders a long stream for benchmarks.
"""

from pbxsim.scenarios import SCENARIOS, Agent, Pbx, Timings
from pbxsim.server import AmiServer
from pbxsim.traffic import generate_stream, run_traffic

__all__ = ["SCENARIOS", "Agent", "AmiServer", "Pbx", "Timings", "generate_stream", "run_traffic"]
