"""Privacy core: rules on models, total conversions, keyed hashing and the scrubber."""
