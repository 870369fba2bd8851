"""Transformer steps between the users module's versions, one file per version they lead to."""
