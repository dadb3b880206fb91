"""The loss landscape of a population: linear mode connectivity, sharpness, representation similarity."""
