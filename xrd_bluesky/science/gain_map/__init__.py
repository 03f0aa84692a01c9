"""The gain-map method and the gain map as analyses use it."""
