"""DF-XRM planning: crystal structures, reflections, attenuation, goniometer orientation, optics."""
