"""The product's container images: their names, definitions, build and inspection."""
