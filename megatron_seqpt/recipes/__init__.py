"""The sequential pre-training recipes: warm-starting T5 from an MLM encoder, extracting an
encoder from T5, and the end-to-end demo that compares them with training from scratch."""
