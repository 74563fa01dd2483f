"""resolve_architecture: derivation text, a file holding it, or a shipped seed's name."""

from pathlib import Path

import pytest

import einspace
from einspace.architecture_source import architecture_kind, resolve_architecture
from einspace.errors import EinspaceError, ParseError
from einspace.seeds import load_seed

TEXT = "(sequential (computation linear16) (computation norm))"


def test_text_is_parsed():
    assert resolve_architecture(TEXT) == einspace.parse(TEXT)
    assert architecture_kind("  " + TEXT) == "text"


def test_a_seed_name_gives_the_shipped_seed():
    assert resolve_architecture("resnet18") == load_seed("resnet18")
    assert architecture_kind("resnet18") == "seed"


def test_a_file_is_read_without_its_comments(tmp_path):
    file = tmp_path / "net.arch"
    file.write_text(f"# my network\n{TEXT}  # linear then norm\n")
    assert resolve_architecture(str(file)) == einspace.parse(TEXT)
    assert architecture_kind(str(file)) == "file"


def test_a_file_shadows_a_seed_unless_files_are_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("mlp").write_text(TEXT)
    assert resolve_architecture("mlp") == einspace.parse(TEXT)
    assert resolve_architecture("mlp", files=False) == load_seed("mlp")
    assert architecture_kind("mlp", files=False) == "seed"


def test_bad_text_is_its_parse_error():
    with pytest.raises(ParseError, match="unclosed"):
        resolve_architecture("(sequential (computation norm)")


@pytest.mark.parametrize("content, expected", [
    (b"(computation norm", "unclosed '('"),
    (b"\xff\xfe(computation norm)", "cannot be read as architecture text"),
])
def test_a_bad_file_is_named_in_its_error(tmp_path, content, expected):
    file = tmp_path / "net.arch"
    file.write_bytes(content)
    with pytest.raises(EinspaceError) as error:
        resolve_architecture(str(file))
    message = str(error.value)
    assert message.startswith(str(file)) and expected in message and "\n" not in message


def test_an_unknown_name_lists_the_seeds_and_says_what_it_was():
    with pytest.raises(EinspaceError, match="neither architecture text, an existing file, "
                                            "nor a seed name .*resnet18"):
        resolve_architecture("resnet19")
    with pytest.raises(EinspaceError, match=r"^evolution.seeds\[2\] 'missing.arch' is neither "
                                            r"architecture text nor a seed name"):
        resolve_architecture("missing.arch", what="evolution.seeds[2]", files=False)


@pytest.mark.parametrize("spec", ["", "a\0b", "x" * 5000])
def test_odd_names_are_unknown_not_crashes(spec):
    assert architecture_kind(spec) == "unknown"
    with pytest.raises(EinspaceError, match="neither architecture text"):
        resolve_architecture(spec)
