"""twinpipe core: config, message envelope, client factories, logging and CLI helpers shared by every stage."""

__version__ = "0.1.0"
