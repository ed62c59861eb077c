"""vtok's version, in a module of its own so that nothing imports the package root from below."""

__version__ = "0.1.0"
