"""The users module: user accounts, published as ``users.created`` when made."""
