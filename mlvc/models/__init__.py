"""mlvc models: a generic model format whose common face is a Python function, a registry
of versions and aliases, and a REST scoring server.

Terms:
    model directory  a folder holding a model's files and its manifest ``mlvc-model.json``
                     (or MLflow's ``MLmodel``); stored in a run or the registry it is one tree
    flavor           a way to save and load a kind of model (``sklearn``, ``torch``,
                     ``onnx``, ``python_function`` for any object with ``predict``)
    signature        the Arrow schemas of a model's input and output, enforced at predict
    model URI        ``run:RUN/PATH``, ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, or
                     a folder
    version          a registered model tree under a name, numbered 1, 2, ...; immutable
    alias            a movable name for one version (``champion``); moves are logged
    trusted          a model whose pickles may be loaded: from this repository, or by an
                     explicit opt-in (``trust=True``); see mlvc.models.trust

    info = mlvc.models.log_model(clf, "clf", input_example=X[:5])   # inside a run
    v = mlvc.models.register("iris", info.uri)
    mlvc.models.set_alias("iris", "champion", v)
    mlvc.models.load("models:/iris@champion").predict(X)
"""

from ..refs.registry import ModelVersion
from .api import (
    ModelInfo,
    alias_history,
    delete_alias,
    describe,
    get,
    list_models,
    log_model,
    model_uri,
    register,
    set_alias,
)
from .errors import (
    BadPayload,
    MissingExtra,
    ModelError,
    SignatureError,
    UnknownModel,
    UntrustedModel,
)
from .format import save
from .loading import Model, load
from .signature import Signature, infer_signature

list = list_models  # noqa: A001  (mlvc.models.list(), as the registry's verb)

__all__ = [
    "BadPayload",
    "MissingExtra",
    "Model",
    "ModelError",
    "ModelInfo",
    "ModelVersion",
    "Signature",
    "SignatureError",
    "UnknownModel",
    "UntrustedModel",
    "alias_history",
    "delete_alias",
    "describe",
    "get",
    "infer_signature",
    "list",
    "list_models",
    "load",
    "log_model",
    "model_uri",
    "register",
    "save",
    "set_alias",
]
