"""Puts models/training on sys.path, so that `medinform_train` imports from any working folder."""

import os
import sys

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TRAINING not in sys.path:
    sys.path.insert(0, TRAINING)
