"""The OpenFlow pipeline as data: table layout, cookie scheme, flows and actions."""
