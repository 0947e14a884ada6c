"""Hugging Face T5 / FLAN-T5 checkpoints read and written without PyTorch: weights
(`checkpoint`), tokenizers (`tokenizer`) and hub ids (`hub`)."""
