"""The shared multilingual sentencepiece vocabulary: its special tokens, training and use."""
