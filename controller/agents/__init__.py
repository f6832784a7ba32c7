"""What runs on the hosts behind the hub and talks to it in-band: the authenticated
datagram channel (`channel`) and the process loop (`loop`) that RAP (`controller.rap`,
the `hub-rap` client) and the shadow agent (`shadow`, `hub-shadow-agent`) share.

Python's standard library only, and nothing here imports the rest of the
controller but this package and `controller.rap`: the agents run on bare hosts.
docs/rap.md and docs/shadow-agent.md specify the protocols byte for byte.
"""
