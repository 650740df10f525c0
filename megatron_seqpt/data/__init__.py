"""Text to training samples: indexed datasets (preprocessing, the cached prepared corpus),
MLM and span-corruption samples, resumable batch streams."""
