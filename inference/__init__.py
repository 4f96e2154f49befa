"""AI analysis of dermoscopic images: synthetic training data, the interpretable ABCD analyser,
and (next) the model registry, MONAI pre-processing and the worker that writes Observations."""
