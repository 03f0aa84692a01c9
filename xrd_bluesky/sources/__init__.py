"""Sources: what turns documents (live, from a catalog, from files) into frames and
inputs of the analyses; :mod:`.frames` is the frame registry."""
