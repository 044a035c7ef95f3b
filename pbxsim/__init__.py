"""The built-in PBX simulator: real AMI on a socket, shaped like Asterisk 22's own traffic.

``scenarios`` builds one call's events (pure), ``server`` speaks AMI and plays them,
``held`` keeps answered calls up for AMI call controls (``AmiServer.hold_call``),
``traffic`` keeps calls coming (live) or renders a long stream for benchmarks.
"""

from pbxsim.held import HeldCall
from pbxsim.scenarios import SCENARIOS, Agent, Pbx, Timings
from pbxsim.server import AmiServer
from pbxsim.traffic import generate_stream, run_traffic

__all__ = [
    "SCENARIOS",
    "Agent",
    "AmiServer",
    "HeldCall",
    "Pbx",
    "Timings",
    "generate_stream",
    "run_traffic",
]
