"""The data layer: sources, validation, versioned store, splits and features."""
