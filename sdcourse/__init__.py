"""sdcourse: the companion package of the Stable Diffusion course."""
__version__ = "0.1.0"
