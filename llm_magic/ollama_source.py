"""``ollama:NAME[:TAG]``: models in Ollama's own store, read with no Ollama server.

The store (``$OLLAMA_MODELS``, default ``~/.ollama/models``) holds
``manifests/REGISTRY/NAMESPACE/NAME/TAG``, JSON whose ``layers`` name blobs by digest; the layer of
media type ``application/vnd.ollama.image.model`` is the GGUF, a ``...projector`` layer the vision
projector. A blob ``sha256:HEX`` is the file ``blobs/sha256-HEX``. Nothing here imports IPython.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, ModelNotFound

PREFIX = "ollama:"
REGISTRY = "registry.ollama.ai"
NAMESPACE = "library"
TAG = "latest"
MODEL_LAYER = "application/vnd.ollama.image.model"
PROJECTOR_LAYER = "application/vnd.ollama.image.projector"
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*(:\d+)?$")
EXAMPLE = "ollama:NAME[:TAG], e.g. ollama:llama3.2 or ollama:qwen2.5:0.5b"


@dataclass(frozen=True)
class OllamaRef:
    registry: str
    namespace: str
    model: str
    tag: str

    @property
    def name(self) -> str:
        return display_name(self.registry, self.namespace, self.model, self.tag)


@dataclass(frozen=True)
class OllamaModel:
    ref: OllamaRef
    path: Path  # the model GGUF blob
    mmproj: Path | None  # the projector blob of a vision model
    manifest: Path


def is_ollama(name: str) -> bool:
    return name.startswith(PREFIX)


def display_name(registry: str, namespace: str, model: str, tag: str) -> str:
    """The shortest ``ollama:`` name for a model: ``ollama:NAME:TAG`` for the library."""
    if registry != REGISTRY:
        return f"{PREFIX}{registry}/{namespace}/{model}:{tag}"
    if namespace != NAMESPACE:
        return f"{PREFIX}{namespace}/{model}:{tag}"
    return f"{PREFIX}{model}:{tag}"


def store() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or "~/.ollama/models").expanduser()


def parse(name: str) -> OllamaRef:
    """``ollama:[[REGISTRY/]NAMESPACE/]NAME[:TAG]`` -> ``OllamaRef``; ``ConfigError`` if malformed."""
    body = name[len(PREFIX) :].strip()
    path, tag = body, TAG
    slash = body.rfind("/")
    colon = body.rfind(":")
    if colon > slash:
        path, tag = body[:colon], body[colon + 1 :]
        if not _TAG.match(tag):
            raise ConfigError(
                f"{name!r}: {tag!r} is not a valid Ollama tag (letters, digits, '_', '.', '-'); {EXAMPLE}"
            )
    parts = path.split("/") if path else []
    if not parts or len(parts) > 3:
        raise ConfigError(f"{name!r} does not name an Ollama model: write {EXAMPLE}")
    registry = parts[0] if len(parts) == 3 else REGISTRY
    namespace = parts[-2] if len(parts) >= 2 else NAMESPACE
    model = parts[-1]
    if not _HOST.match(registry) or not all(_PART.match(p) for p in (namespace, model)):
        raise ConfigError(f"{name!r} does not name an Ollama model: write {EXAMPLE}")
    return OllamaRef(registry, namespace, model, tag)


def list_models(root: Path | None = None) -> list[tuple[str, Path]]:
    """Every ``(ollama:name, manifest path)`` in the store, sorted; [] if there is no store."""
    root = (root or store()) / "manifests"
    found: list[tuple[str, Path]] = []
    try:
        registries = sorted(root.iterdir())
    except OSError:
        return []
    for reg in registries:
        for ns in _dirs(reg):
            for model in _dirs(ns):
                try:
                    tags = sorted(p for p in model.iterdir() if p.is_file())
                except OSError:
                    continue
                found.extend((display_name(reg.name, ns.name, model.name, t.name), t) for t in tags)
    return found


def _dirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir())
    except OSError:
        return []


def blob_path(root: Path, digest: str) -> Path:
    algo, _, hexdigest = str(digest).partition(":")
    if algo != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{64}", hexdigest):
        raise ValueError(f"bad digest {digest!r}")
    return root / "blobs" / f"sha256-{hexdigest}"


def read_manifest(ref_name: str, manifest: Path, root: Path) -> tuple[Path, Path | None]:
    """(model blob, projector blob or None) of a manifest; ``ModelNotFound`` saying what is wrong."""
    try:
        data = json.loads(manifest.read_text())
        layers = data["layers"]
        if not isinstance(layers, list):
            raise TypeError("'layers' is not a list")
        by_type = {str(layer["mediaType"]): blob_path(root, layer["digest"]) for layer in layers}
    except OSError as exc:
        raise ModelNotFound(f"{ref_name}: cannot read its manifest {manifest}: {exc.strerror or exc}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelNotFound(f"{ref_name}: its manifest {manifest} is corrupt ({type(exc).__name__}: {exc})") from None
    model = by_type.get(MODEL_LAYER)
    if model is None:
        raise ModelNotFound(f"{ref_name}: its manifest {manifest} has no model layer ({MODEL_LAYER})")
    if not model.is_file():
        raise ModelNotFound(f"{ref_name}: the model blob {model} is missing (an interrupted `ollama pull`?)")
    projector = by_type.get(PROJECTOR_LAYER)
    if projector is not None and not projector.is_file():
        raise ModelNotFound(f"{ref_name}: the projector blob {projector} is missing (an interrupted `ollama pull`?)")
    return model, projector


def locate(name: str) -> OllamaModel:
    """The blobs of ``ollama:...`` in the store; an unknown name lists what the store has."""
    ref = parse(name)
    root = store()
    manifest = root / "manifests" / ref.registry / ref.namespace / ref.model / ref.tag
    if not manifest.is_file():
        if not (root / "manifests").is_dir():
            raise ModelNotFound(
                f"{ref.name}: no Ollama store at {root} (set OLLAMA_MODELS to the folder holding 'manifests' and 'blobs')"
            )
        have = [n for n, _ in list_models(root)]
        shown = ", ".join(have[:30]) + (f", … ({len(have)} in all)" if len(have) > 30 else "")
        raise ModelNotFound(f"{ref.name} is not in the Ollama store {root}; it has: {shown or 'no models'}")
    model, projector = read_manifest(ref.name, manifest, root)
    return OllamaModel(ref, model, projector, manifest)
