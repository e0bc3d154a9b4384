"""The conformance kit: contract checks for encoders, fusions and plugins, and
pytest fixtures for an isolated registry (in the spirit of scikit-learn's
``check_estimator``).

::

    from mmzoo.testing import check_encoder, check_fusion

    check_encoder("lstm(hidden_size=16, vocab_size=300)")   # a registered name
    check_encoder(MyEncoder, kwargs={"width": 8})             # or a class / factory
    check_fusion("concat")

Each check that fails raises :class:`ConformanceError` (an
``AssertionError``) that names the component, the check and the reason.
The checks run on CPU with tiny random inputs.

Encoders checked (:func:`check_encoder`): ``build``, ``registered
parameters``, ``prepare_input``, ``rejects bad input``, ``output``,
``num_features honest``, ``token mask``, ``padding ignored``, ``samples
independent``, ``deterministic in eval``, ``gradient``, ``state_dict round
trip``, ``processor``, ``model round trip``.

Fusions checked (:func:`check_fusion`), for 3, 2 and 1 inputs: ``build``,
``registered parameters``, ``output``, ``masking exact``, ``token masks
honoured``, ``whole input missing``, ``samples independent``,
``deterministic in eval``, ``gradient``, ``state_dict round trip``.

Example inputs: images (B, C, 32, 32) and token ids are made by the kit; an
encoder of another modality implements ``example_input(batch_size,
generator)`` (and, for its processor, ``example_raw(batch_size)``) or the
caller passes ``inputs=``.

Pytest fixtures (:mod:`mmzoo.testing.fixtures`) come with mmzoo through its
``pytest11`` entry point: once mmzoo is installed, any test suite can ask for
them by name, no import needed::

    def test_it(make_mmzoo_registry):
        registry = make_mmzoo_registry("my_plugin.plugin")   # built-ins + this plugin
        model = mmzoo.create("my_encoder/concat")            # uses that registry

``make_mmzoo_registry(*plugins, builtins=True)`` builds a clean
:class:`~mmzoo.registry.Registry` (no entry-point discovery) holding mmzoo's
built-in plugins and ``plugins`` (entry-point names such as ``"audio"``,
module names, modules or ``(name, module)`` pairs) and makes it the default
registry until the test ends; ``mmzoo_registry`` is the same with the
built-ins only. Outside pytest, :func:`isolated_registry` and
:func:`use_registry` do the same.

Modules: :mod:`~mmzoo.testing.encoders`, :mod:`~mmzoo.testing.fusions`,
:mod:`~mmzoo.testing.plugins` (the checks), :mod:`~mmzoo.testing.registries`
(isolated registries), :mod:`~mmzoo.testing.fixtures` (the pytest plugin).
"""

from __future__ import annotations

from typing import Any

from mmzoo.testing._common import ConformanceError
from mmzoo.testing.encoders import check_encoder
from mmzoo.testing.fusions import check_fusion
from mmzoo.testing.plugins import check_plugin
from mmzoo.testing.registries import isolated_registry, use_registry

__all__ = [
    "ConformanceError",
    "check_encoder",
    "check_fusion",
    "check_plugin",
    "isolated_registry",
    "make_mmzoo_registry",
    "mmzoo_registry",
    "use_registry",
]

_FIXTURES = ("make_mmzoo_registry", "mmzoo_registry")


def __getattr__(name: str) -> Any:
    """The fixtures, for test modules that import them (this imports pytest)."""
    if name in _FIXTURES:
        from mmzoo.testing import fixtures

        return getattr(fixtures, name)
    raise AttributeError(f"module 'mmzoo.testing' has no attribute {name!r}")
