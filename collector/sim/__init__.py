"""The JEX exchange simulator: a deterministic market behind a JEX-compatible HTTP API."""

from collector.sim.app import create_app
from collector.sim.faults import Faults
from collector.sim.market import SimExchange, SimFund, SimFunding, SimKline, SimTrade
from collector.sim.server import SimServer

__all__ = [
    "Faults",
    "SimExchange",
    "SimFund",
    "SimFunding",
    "SimKline",
    "SimServer",
    "SimTrade",
    "create_app",
]
