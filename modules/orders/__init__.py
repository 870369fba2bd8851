"""The orders module: places orders, calling users and inventory through ``gctx``."""
