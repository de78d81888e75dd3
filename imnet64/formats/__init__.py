"""File formats.

The TFRecord schema, the manifest (reader and writer), label parts, 64x64 images, class names.
"""
