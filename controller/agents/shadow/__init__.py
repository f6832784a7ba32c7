"""The shadow agent, `hub-shadow-agent`: it runs a shadow instance of an appliance on a
slot host (the manifest's image, with the production addresses on the slot's
interface) and its analysis profiles, and reports to the hub in-band.

Python's standard library only.  `protocol` is the messages and `orders` the launch
orders and findings cut to datagrams (both shared with the hub's shadow feature);
`agent` is the state machine, `host` the process launcher and the load readers,
`profiles` the plug-in point of the analysis profiles, `main` the process.
docs/shadow-agent.md specifies it.
"""
