"""gnnseg."""
