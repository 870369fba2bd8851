"""The inventory module: stock per SKU, with reservations that can be released."""
