"""Data: readers and checks, splits and transforms for images and signals."""
