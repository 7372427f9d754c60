"""The desktop application (the only package that imports PySide6).

Nothing here imports TensorFlow at import time: the model loads on a worker
after the window is shown (``workers.ModelTask``).
"""
