"""Sophgo bmodels: reader, memory figures and the `models info` report."""
