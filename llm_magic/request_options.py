"""One request's options: what the caller gave, completed from the current settings, validated
once (a bad value is a ``ConfigError`` naming the rule before anything loads)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from . import hf_source, model_sources
from . import settings as settings_mod
from .errors import ConfigError
from .images import Image, load_image
from .specs import ModelSpec, resolve

SETTINGS_SAMPLING = ("temperature", "top_p", "top_k", "repeat_penalty", "frequency_penalty", "presence_penalty")


@dataclass(frozen=True)
class RequestOptions:
    spec: ModelSpec
    timeout: float | None
    max_tokens: int
    system: str | None
    sampling: dict[str, Any]
    images: list[Image]


def resolve_options(
    model: str | None,
    timeout: float | None,
    max_tokens: int | None,
    system: str | None,
    images: Sequence[Any] | None,
    sampling: dict[str, Any],
) -> RequestOptions:
    """Defaults from the settings for whatever the caller left out, then validation."""
    s = settings_mod.current()
    timeout = s.timeout if timeout is None else timeout
    max_tokens = s.max_tokens if max_tokens is None else max_tokens
    sampling = dict(sampling)
    if sampling.get("stop") == "":  # an empty stop string is no stop string: the settings' apply
        sampling["stop"] = None
    for key in SETTINGS_SAMPLING:
        if sampling.get(key) is None:
            sampling[key] = getattr(s, key)
    if sampling.get("seed") is None and s.seed >= 0:
        sampling["seed"] = s.seed
    if not sampling.get("stop") and s.stop:
        sampling["stop"] = list(s.stop)
    if isinstance(sampling.get("stop"), str):
        sampling["stop"] = [sampling["stop"]]
    sampling = {k: v for k, v in sampling.items() if v is not None}
    settings_mod.check_request(timeout, max_tokens, sampling)
    if images and not model:
        model = s.vision_model or None
    spec = resolve(model)
    loaded = [img if isinstance(img, Image) else load_image(img) for img in (images or [])]
    if loaded and not spec.mmproj and model and hf_source.is_hf(model):  # the repo's projector, if it has one
        projector = model_sources.hf_projector(model)
        spec = replace(spec, mmproj=projector) if projector else spec
    if loaded and not spec.mmproj and not spec.remote:
        vision = [n for n, o in s.aliases().items() if o.get("mmproj")]
        raise ConfigError(
            f"{spec.display_name} is a text-only model and cannot take images; "
            f"vision models configured: {', '.join(vision) or 'none'} "
            f"(a vision alias has 'path' and 'mmproj'; set AskMagics.vision_model)"
        )
    system = system if system is not None else (s.system or None)
    return RequestOptions(spec, timeout, max_tokens, system, sampling, loaded)
