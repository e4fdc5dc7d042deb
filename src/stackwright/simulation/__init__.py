"""Hosts of hypervisor ``Simulator``: hosts with no machine behind them.

They let users rehearse playbooks without hardware and let benchmarks hold thousands of
hosts. Two pieces:

- `host`: what the engine knows of a Simulator host by itself (its size from the host's
  URL or the global defaults, a label address, the facts a registration would report),
  so the host service can add one and answer for it without any agent.
- `agent`: a simulated agent, the agent's real link and command handlers over the
  in-memory simulator drivers. The engine runs one in-process per Simulator host (through
  the same sessions as real agents); run as a module it is a load generator.

Where it sits: the engine (`stackwright.management`) and the host agent
(`stackwright.agent`) never import each other. A simulated agent is made of agent parts,
so this package imports `stackwright.agent` and `stackwright.protocol`; the engine reaches
agent code only through it, and the agent never imports it.
"""
