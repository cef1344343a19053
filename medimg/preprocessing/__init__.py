"""Contrast enhancement, denoising and resizing, shared by the preprocess stage and serving."""
