"""Where Hugging Face hub files live on this machine.

The cache folder and the offline switch are read from the environment at
call time (``HF_HUB_CACHE``, ``HF_HOME``, ``HF_HUB_OFFLINE``), so a process
that set them after importing ``huggingface_hub`` still gets what it asked
for. A file found in the cache is used from there without any network call.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmzoo.errors import WeightsError

_TRUE = {"1", "on", "yes", "true"}


def cache_dir() -> Path:
    """The hub cache folder (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def cached_file(repo_id: str, filenames: tuple[str, ...]) -> Path | None:
    """The first of ``filenames`` cached for ``repo_id`` (revision ``main``), or None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache_dir()))
        if isinstance(found, str):
            return Path(found)
    return None


def not_cached_error(what: str, repo_id: str, filename: str, fallback: str) -> WeightsError:
    """The error for weights that are neither cached nor downloadable (offline)."""
    return WeightsError(
        f"{what}: {filename} of Hugging Face repo {repo_id!r} is not in the cache {cache_dir()} and "
        "HF_HUB_OFFLINE is set, so it cannot be downloaded. On a machine with internet run "
        f"`huggingface-cli download {repo_id} {filename}` (or build the model once there) and copy "
        f"that cache folder here, point HF_HOME at a cache that has it, or {fallback}"
    )


def local_snapshot(repo_id: str, what: str) -> str:
    """The cached snapshot folder of ``repo_id`` when its ``config.json`` is
    cached (loaded from there, no network), else ``repo_id`` itself to
    download; offline and not cached: :class:`WeightsError`."""
    if os.path.isdir(repo_id):
        return repo_id
    config = cached_file(repo_id, ("config.json",))
    if config is not None:
        return str(config.parent)
    if offline():
        raise not_cached_error(what, repo_id, "config.json",
                               "pass a local folder (hf:/path/to/model)")
    return repo_id
