"""RAP, the Resource Assignment Protocol: its messages (`protocol`) and the resource's
client (`client`, the `hub-rap` console script).

Python's standard library only, and nothing here imports the rest of the
controller: `hub-rap` runs on a bare resource.  The hub's server is the shard
feature's (`controller.features.shard`); docs/rap.md specifies both ends.
"""
