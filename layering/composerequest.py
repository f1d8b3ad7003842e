"""What ``compose`` is asked (:class:`ComposeRequest`), kept apart from the compose itself
so that reading a request (a compose file, the compose key) does not load the solver."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from importers.sources import Sources, parse_spec, sources_from_commit
from store.repo import Repo


@dataclass(frozen=True)
class ComposeRequest:
    """Everything ``compose`` is asked: base, branch and the package request."""

    base: str
    branch: str | None = None
    install: tuple[str, ...] = ()
    install_local: tuple[Path, ...] = ()
    remove: tuple[str, ...] = ()
    replace_local: tuple[Path, ...] = ()
    sources: tuple[str, ...] = ()
    source_set: Sources | None = None
    no_scripts: bool = False
    offline: bool = False
    no_recommends: bool = False
    dry_run: bool = False
    subject: str = ""
    version: str = ""  # the commit's ``version`` metadata (default: the base's)
    kargs: tuple[str, ...] = ()  # kernel arguments for deployments of the image
    client_layer: bool = False  # a host's own layer (rpm-ostree's clientlayer), not an image
    host_etc: Path | None = None  # the host's /etc: its users and identity, for the scripts
    reuse: str | None = None  # a commit returned as is when its input hash is this request's
    refuse_inactive: tuple[str, ...] = ()  # names refused when the base already provides them
    download_only: bool = False  # fill the package cache, commit nothing


def source_list(repo: Repo, base: str, request: ComposeRequest) -> Sources:
    """``request.sources`` specs, else its source set, else the base image's configuration."""
    if request.sources:
        src = Sources()
        for spec in request.sources:
            src = src + parse_spec(spec)
        return src
    if request.source_set is not None:
        return request.source_set
    return sources_from_commit(repo, base)


def image_inputs(request: ComposeRequest) -> dict[str, object]:
    """The request's image-only inputs that change the commit, when given."""
    doc: dict[str, object] = {}
    if request.version:
        doc["version"] = request.version
    if request.subject:
        doc["subject"] = request.subject
    if request.kargs:
        doc["kargs"] = list(request.kargs)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and not request.client_layer:
        doc["source-date-epoch"] = epoch
    return doc
