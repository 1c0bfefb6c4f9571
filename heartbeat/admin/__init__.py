"""The operator console for agents and runs: which run is stuck, why, and what happens next.

One module per responsibility; importing them registers their admin classes.
"""

from heartbeat.admin import agents, records, runs, sweeps

__all__ = ["agents", "records", "runs", "sweeps"]
