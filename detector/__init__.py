"""Deepfake detection pipeline (MeVer-style): a link or file in, a versioned Report out.

This package imports nothing from the bots, the web API or the queue. Importing it
is cheap: the heavy modules (torch, OpenCV, dlib) load only when a stage runs.
"""

__version__ = "0.1.0"
