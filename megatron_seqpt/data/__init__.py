"""Text to training samples: corpus reading, sentence splitting, indexed datasets, samples."""
