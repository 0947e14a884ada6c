"""Sentence pairs in, batches out: corpus files read and checked (`corpus`), tokenized pairs
and their `tf.data` pipeline (`pipeline`).

Example:
```python
from lora_keras.data.corpus import read_pairs
from lora_keras.data.pipeline import make_dataset, tokenize_pairs
```
"""
