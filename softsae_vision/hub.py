"""SAEs on the Hugging Face Hub: ``hf://ORG/REPO[/SUBDIR][@REV]`` paths and uploads.

Downloads go through ``huggingface_hub.snapshot_download`` into its usual cache
(``HF_HUB_CACHE``), so a run fetched once loads offline (``HF_HUB_OFFLINE=1``) from the cached
snapshot. An upload holds ``sae.safetensors``, ``config.json`` and a generated model card
(``README.md``) — a repo that ``load_sae("hf://...")`` reads back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softsae_vision.errors import SoftSAEError

SCHEME = "hf://"
CITATION = """@article{stepien2026softsae,
  title   = {SoftSAE: Dynamic Top-K Selection for Adaptive Sparse Autoencoders},
  author  = {St{\\k{e}}pie{\\'n} and Mazur and Tabor and Spurek},
  journal = {arXiv preprint arXiv:2605.06610},
  year    = {2026}
}"""
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class HubPath:
    """A parsed ``hf://ORG/REPO[/SUBDIR][@REV]``."""

    repo_id: str
    subdir: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        sub = f"/{self.subdir}" if self.subdir else ""
        rev = f"@{self.revision}" if self.revision else ""
        return f"{SCHEME}{self.repo_id}{sub}{rev}"


def parse_hub_path(text: str) -> HubPath:
    """Split ``hf://ORG/REPO[/SUBDIR][@REV]`` (``hf:/`` too: what ``Path`` makes of it)."""
    if not text.startswith("hf:"):
        raise SoftSAEError(f"{text!r} is not a Hub path; write hf://ORG/REPO[/SUBDIR][@REV]")
    rest = text[3:].lstrip("/")
    rest, _, revision = rest.partition("@")
    parts = [p for p in rest.split("/") if p]
    if len(parts) < 2 or not _REPO.match("/".join(parts[:2])) or ".." in parts:
        raise SoftSAEError(f"{text!r} is not a Hub path; write hf://ORG/REPO[/SUBDIR][@REV]")
    return HubPath("/".join(parts[:2]), "/".join(parts[2:]) or None, revision or None)


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(constants.HF_HUB_OFFLINE)


def resolve_hub(text: str) -> Path:
    """The local folder (or file) a Hub path names, downloaded into the cache if needed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    ref = parse_hub_path(text)
    offline = _offline()
    try:
        snapshot = snapshot_download(
            ref.repo_id,
            revision=ref.revision,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
            allow_patterns=[f"{ref.subdir}/*"] if ref.subdir else None,
            local_files_only=offline,
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        how = (
            "unset HF_HUB_OFFLINE to download it, or download it on a connected machine "
            "(softsae eval/load once) and copy the Hugging Face cache here"
            if offline
            else "check the network connection, or download it on a connected machine and "
            "copy the Hugging Face cache here"
        )
        raise SoftSAEError(f"{ref} is not in the local Hugging Face cache; {how}") from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise SoftSAEError(
            f"{ref}: {type(err).__name__} (check ORG/REPO and @REV, or log in with "
            "`hf auth login` for a private repo)"
        ) from None
    except HfHubHTTPError as err:
        raise SoftSAEError(f"{ref} could not be downloaded ({err}); try again later") from None
    local = Path(snapshot) / (ref.subdir or "")
    if not local.exists():
        raise SoftSAEError(f"{ref}: the repo has no {ref.subdir!r}; check the SUBDIR part")
    return local


# --------------------------------------------------------------------------- model card
def _final_metrics(run_dir: Path | None) -> dict[str, float]:
    if run_dir is None or not (run_dir / "metrics.jsonl").is_file():
        return {}
    lines = [ln for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    if not lines:
        return {}
    last = json.loads(lines[-1])
    return {k: v for k, v in last.items() if isinstance(v, (int, float))}


def model_card(
    config: dict[str, Any], metrics: dict[str, float] | None = None, repo_id: str | None = None
) -> str:
    """A Hub model card (README.md) describing an SAE run from its config and final metrics."""
    arch = config.get("architecture", "?")
    hp = config.get("hparams", {})
    data = config.get("data") or {}
    backbone = data.get("backbone") or "unknown backbone"
    layer = data.get("layer", "?")
    tokens = data.get("tokens", "?")
    k = hp.get("k", "?")
    rows = [
        ("architecture", arch),
        ("input width d", config.get("d_in")),
        ("latents F", config.get("n_latents")),
        ("K (target mean L0)", k),
        *([("k_max", hp["k_max"])] if "k_max" in hp else []),
        ("backbone", backbone),
        ("layer", layer),
        ("tokens", tokens),
        ("data", data.get("kind", "?")),
        ("training rows", data.get("n_rows", "?")),
        ("softsae-vision", config.get("library_version", "?")),
    ]
    if imported := config.get("imported_from"):
        rows.append(("imported from", imported.get("format", "?")))
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    metric_rows = "\n".join(
        f"| {name} | {value:.5g} |" for name, value in sorted((metrics or {}).items())
    )
    metrics_block = (
        f"## Final training metrics\n\n| metric | value |\n| --- | --- |\n{metric_rows}\n"
        if metric_rows
        else "## Metrics\n\nNo training metrics were recorded with this SAE.\n"
    )
    return f"""---
library_name: softsae-vision
tags:
- sparse-autoencoder
- interpretability
- vision-transformer
- {arch}
---

# {arch} SAE on {backbone}, layer {layer} ({tokens} tokens)

A sparse autoencoder trained with
[softsae-vision](https://pypi.org/project/softsae-vision/) on the activations of
`{backbone}` (layer {layer}, {tokens} tokens). It reads raw activations: the input
normalisation is part of the weights.

| setting | value |
| --- | --- |
{table}

{metrics_block}
## Use

```python
from softsae_vision import load_sae

sae = load_sae("hf://{repo_id or "ORG/REPO"}")
codes = sae.encode(activations)  # (N, {config.get("d_in")}) -> (N, {config.get("n_latents")})
```

## Citation

SoftSAE (arXiv:2605.06610):

```bibtex
{CITATION}
```
"""


def stage(sae_or_run: Any, folder: str | os.PathLike, repo_id: str | None = None) -> Path:
    """Write the files of an upload (weights, config, README.md) into ``folder``."""
    from softsae_vision.sae.base import CONFIG_FILE, WEIGHTS_FILE, BaseSAE, load_sae

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    run_dir = None
    if isinstance(sae_or_run, BaseSAE):
        sae_or_run.save(folder)
    else:
        run_dir = Path(sae_or_run)
        run_dir = run_dir.parent if run_dir.suffix == ".safetensors" else run_dir
        load_sae(run_dir)  # refuses unfinished or damaged runs before anything is uploaded
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            shutil.copyfile(run_dir / name, folder / name)
    config = json.loads((folder / CONFIG_FILE).read_text())
    (folder / "README.md").write_text(model_card(config, _final_metrics(run_dir), repo_id))
    return folder


def push_to_hub(
    sae_or_run: Any,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload SAE with softsae-vision",
    token: str | None = None,
) -> str:
    """Upload an SAE (or a run directory) to ``repo_id``; returns the commit URL."""
    if not _REPO.match(repo_id):
        raise SoftSAEError(f"repo must look like ORG/REPO, got {repo_id!r}")
    if _offline():
        raise SoftSAEError(
            f"cannot upload to {repo_id} while HF_HUB_OFFLINE is set; unset it on a machine "
            "with network access"
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="softsae-push-") as tmp:
        folder = stage(sae_or_run, tmp, repo_id)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                revision=revision,
                commit_message=commit_message,
            )
        except HfHubHTTPError as err:
            raise SoftSAEError(
                f"upload to {repo_id} failed ({err}); log in with `hf auth login` or pass a "
                "token with write access"
            ) from None
    return str(getattr(info, "commit_url", info))
