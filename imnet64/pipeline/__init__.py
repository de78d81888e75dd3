"""Whole-pipeline orchestration above the stages.

The demo, its sample images, doctor.
"""
