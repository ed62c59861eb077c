import types

import vtok


def test_all_matches_public_members():
    public = {n for n in dir(vtok) if not n.startswith("_") and not isinstance(getattr(vtok, n), types.ModuleType)}
    assert set(vtok.__all__) - {"__version__"} == public


def test_every_exported_name_resolves():
    for name in vtok.__all__:
        assert getattr(vtok, name) is not None


def test_registry_lists_tiny_variant_of_every_architecture():
    from vtok.registry import ARCHITECTURES

    names = vtok.list_tokenizers()
    for arch in ARCHITECTURES:
        assert f"{arch}-tiny" in names


def test_subpackages_declare_their_public_names():
    import vtok.bench
    import vtok.lm
    import vtok.metrics

    for module in (vtok.metrics, vtok.bench, vtok.lm):
        public = {
            n for n in dir(module) if not n.startswith("_") and not isinstance(getattr(module, n), types.ModuleType)
        }
        assert set(module.__all__) == public, module.__name__


def test_probe_and_llm_modules_declare_their_public_names():
    import pytest

    pytest.importorskip("transformers")
    import vtok.llm
    import vtok.metrics.probe

    for module in (vtok.llm, vtok.metrics.probe):
        assert module.__all__ and all(getattr(module, name) is not None for name in module.__all__)
