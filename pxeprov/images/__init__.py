"""Boot images: reading ISOs, their layouts (kinds), downloads."""
