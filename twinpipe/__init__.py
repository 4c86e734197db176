"""twinpipe core: config, envelope, client factories, logging and CLI helpers shared by all stages."""

__version__ = "0.1.0"
