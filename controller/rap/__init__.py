"""RAP, the Resource Assignment Protocol: its messages (`protocol`, over the agents'
authenticated channel, `controller.agents.channel`) and the resource's client
(`client`, the `hub-rap` console script, with `addresses` for its `ip` calls).

Python's standard library only, and nothing here imports the rest of the
controller but `controller.agents`: `hub-rap` runs on a bare resource.  The hub's
server is the shard feature's (`controller.features.shard`); docs/rap.md
specifies both ends.
"""
