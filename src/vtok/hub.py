"""Loading models (tokenizers, token LMs) from, and pushing tokenizers to, the Hugging Face Hub.

Kept apart from the tokenizer so that vtok works fully offline without ``huggingface_hub``: it is
imported only when a Hub id is actually used, and its absence is a one-line
:class:`~vtok.errors.OptionalDependencyError` naming the extra (``vtok[hub]``).

Only the files a model folder holds are ever fetched or uploaded (:data:`HUB_FILES`):
safetensors weights and JSON config, never pickles, so loading a stranger's repository cannot run
their code.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import ConfigError, ModelLoadError, OptionalDependencyError

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

__all__ = ["HUB_FILES", "parse_hub_id", "download", "push", "model_card"]

# What a vtok repository holds; everything else in a repository (pickles above all) is ignored.
HUB_FILES = ("config.json", "model.safetensors", "prior.safetensors", "README.md")
REQUIRED_FILES = ("config.json", "model.safetensors")

# owner/name[@revision]: the Hub's own rules (letters, digits, '-', '_', '.'; at most 96 characters
# each), checked here so that a mistyped local path is not sent to the network.
_NAME = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"(?P<repo>{_NAME}/{_NAME})(?:@(?P<revision>[\w./-]+))?")


def parse_hub_id(text: str) -> tuple[str, str | None] | None:
    """``"user/repo@rev"`` -> ``("user/repo", "rev")``; None when `text` cannot be a Hub id."""
    m = _HUB_ID.fullmatch(text)
    if m is None or ".." in m["repo"] or "--" in m["repo"]:
        return None
    return m["repo"], m["revision"]


def _import_hub(feature: str) -> ModuleType:
    """huggingface_hub, or the error that says how to install it."""
    try:
        import huggingface_hub
    except ImportError as e:
        raise OptionalDependencyError("huggingface_hub", "hub", feature) from e
    return huggingface_hub


def _one_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception: Hub errors span paragraphs, vtok's messages are one line."""
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def download(hub_id: str, what: str = "tokenizer") -> Path:
    """The local folder of a Hub model (``user/repo`` or ``user/repo@revision``), fetched or cached.

    Goes through ``huggingface_hub.snapshot_download``, so the Hub cache, ``HF_HUB_CACHE``,
    ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` behave as in every other Hugging Face library. `what` names
    the kind of model expected ("tokenizer", "token LM") when the repository holds none.
    """
    parsed = parse_hub_id(hub_id)
    if parsed is None:
        raise ModelLoadError(f"{hub_id}: not a Hugging Face Hub id (expected 'user/repo' or 'user/repo@revision')")
    repo_id, revision = parsed
    hf = _import_hub(f"{hub_id!r} was not found as a local folder; loading it from the Hugging Face Hub (network)")
    try:
        folder = Path(
            hf.snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=list(HUB_FILES),
                library_name="vtok",
                library_version=__version__,
            )
        )
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"{hub_id}: no such local folder, and loading it from the Hugging Face Hub failed "
            f"(that needs the network, or a cached copy when HF_HUB_OFFLINE=1): {_one_line(e)}"
        ) from e
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"{hub_id}: the Hub repository has no {' or '.join(missing)}; "
            f"it is not a vtok {what} (vtok loads safetensors only, never pickled weights)"
        )
    return folder


def model_card(tokenizer: Tokenizer, repo_id: str) -> str:
    """A README.md for the Hub: metadata the Hub indexes, what the model is, and how to load it."""
    return (
        "---\n"
        "library_name: vtok\n"
        "tags:\n- vtok\n- image-tokenizer\n"
        "---\n\n"
        f"# {repo_id}\n\n"
        f"A vtok image tokenizer: `{tokenizer.model.architecture}`, "
        f"{tokenizer.image_size}x{tokenizer.image_size} images, up to {tokenizer.num_tokens} tokens of "
        f"{tokenizer.bits_per_token:.2f} bits"
        f"{', with a token prior for entropy coding' if tokenizer.prior is not None else ''}.\n\n"
        "```python\n"
        "import vtok\n\n"
        f'tok = vtok.load("{repo_id}")  # pip install "vtok[hub]"\n'
        "tokens = tok.encode(images, num_tokens=8)\n"
        "images = tok.decode(tokens)\n"
        "```\n"
    )


def push(
    tokenizer: Tokenizer,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    card: str | None = None,
) -> Any:
    """Save `tokenizer` with ``save_pretrained`` into a temporary folder and upload it as one commit.

    The repository is created if needed. Returns what ``HfApi.upload_folder`` returns (the commit
    info, whose string is the commit URL).
    """
    parsed = parse_hub_id(repo_id)
    if parsed is None or parsed[1] is not None:
        raise ConfigError(f"{repo_id}: not a Hugging Face Hub repository id (expected 'user/repo'; pass revision=...)")
    hf = _import_hub("pushing to the Hugging Face Hub")
    api = hf.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory(prefix="vtok-push-") as tmp:
        folder = tokenizer.save_pretrained(Path(tmp) / "tokenizer")
        (folder / "README.md").write_text(card if card is not None else model_card(tokenizer, repo_id))
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=os.fspath(folder),
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload vtok tokenizer {tokenizer.name}",
            create_pr=create_pr,
            allow_patterns=list(HUB_FILES),
        )
