"""core4's web side: app containers, request handlers, authentication and
the REST API (:mod:`core4.api.v1`), served by ``coco --application``."""

from core4.api.container import CoreApiContainer
from core4.api.handler import CoreRequestHandler

__all__ = ["CoreApiContainer", "CoreRequestHandler"]
