"""Raw text: corpus readers, sentence splitting, language sampling weights (below the tokenizer
and the datasets, which both read text)."""
