"""os-ken apps: thin translators between OpenFlow events and the hub core."""
