"""hubshift: an SDN controller that turns an Open vSwitch fabric into a virtual traffic hub."""
__version__ = "0.1.0"
