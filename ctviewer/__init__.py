"""CT Viewer: read chest CT slices and classify them with a bundled ResNet50."""

__version__ = "0.1.0"
