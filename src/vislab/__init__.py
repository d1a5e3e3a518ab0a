"""vislab: four classic deep-learning-for-vision experiments as tested, fast, reproducible software."""
__version__ = "0.1.0"
