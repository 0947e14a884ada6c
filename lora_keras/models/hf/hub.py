"""Hub ids such as `google/flan-t5-small`: a local checkpoint dir from the Hugging Face hub cache.

Example:
```python
path = download("google/flan-t5-small")       # cached after the first call; offline: InputError
```
"""

from __future__ import annotations

import pathlib
import re

from lora_keras.errors import InputError

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# What a T5 checkpoint needs; the hub repos also hold TF, Flax and ONNX copies we skip.
FILES = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
         "spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
TORCH_FILES = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"]


def is_hub_id(spec: str) -> bool:
    """Whether `spec` looks like `owner/name` and is no local path.

    Example:
    ```python
    is_hub_id("google/flan-t5-small")   # True, unless a local dir of that name exists
    ```
    """
    return bool(HUB_ID.fullmatch(spec)) and not pathlib.Path(spec).exists()


def download(repo_id: str) -> pathlib.Path:
    """The local snapshot dir of hub repo `repo_id` (downloaded to the hub cache if needed).

    Args:
        repo_id: `owner/name` on the Hugging Face hub.

    Returns:
        The snapshot directory; an `InputError` (parameter `model`) when the repo is unknown
        or cannot be reached.

    Example:
    ```python
    download("google/flan-t5-small")   # ~/.cache/huggingface/hub/models--google--flan-t5-small/...
    ```
    """
    import huggingface_hub  # optional: huggingface_hub, only for hub ids
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        path = pathlib.Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=FILES))
        if not any(path.glob("*.safetensors")):  # older repos hold PyTorch weights only
            path = pathlib.Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=FILES + TORCH_FILES))
    except RepositoryNotFoundError:
        raise InputError(
            f"model {repo_id}: no such repository on the Hugging Face hub (or it is gated); "
            "check the id, or pass a local checkpoint directory",
            parameter="model",
        ) from None
    except Exception as error:  # noqa: BLE001  offline, no route, proxy, timeout: all mean "not from here"
        reason = (str(error).strip().splitlines() or [""])[0]
        reason = reason if len(reason) <= 100 else reason[:100].rsplit(" ", 1)[0] + " ..."
        raise InputError(
            f"model {repo_id}: cannot download from the Hugging Face hub ({type(error).__name__}"
            f"{': ' + reason if reason else ''}); download it where the network allows "
            "and pass the local directory",
            parameter="model",
        ) from None
    return path
