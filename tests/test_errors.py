"""Malformed or impossible inputs give a clear EinspaceError naming what and where."""

import pytest

import einspace
from einspace import ConfigError, GrammarError, ParseError, ShapeError
from einspace.errors import EinspaceError

CONV = "(routing im2col3k1s1p (computation linear64) col2im)"

PARSE_CASES = [
    ("", "empty"),
    ("   ", "empty"),
    ("sequential (computation norm)", "must start with '('"),
    ("(sequential (computation norm) (computation norm)", "unclosed '('"),
    ("(sequential (computation norm) (computation norm)))", "unbalanced ')'"),
    ("(sequential (computation norm) (computation norm)) (computation norm)", "continues after"),
    ("(sequential (computation nrom) (computation norm))", "unknown computation terminal 'nrom'"),
    ("(sequential (computation norm) (computation linear63))", "did you mean"),
    ("(sequentail (computation norm) (computation norm))", "unknown production 'sequentail'"),
    ("(sequential (computation norm))", "sequential takes 2 children"),
    ("(sequential (computation norm) (computation norm) (computation norm))",
     "takes 2 children"),
    ("(sequential norm (computation norm))", "bare terminal 'norm'"),
    ("(computation (computation norm))", "expected a computation terminal name"),
    ("(computation norm leakyrelu)", "computation takes 1 children"),
    ("(routing im2col3k1s1p (computation linear64))", "routing takes 3 children"),
    ("(routing col2im (computation linear64) im2col3k1s1p)", "unknown prerouting terminal"),
    ("(branching clone_tensor4 (computation norm) (computation norm) add_tensors)",
     "branching takes 3 children"),
    ("(branching clone_tensor2 (computation norm) add_tensors)", "branching takes 4 children"),
    ("(branching (computation norm) (computation norm) add_tensors)",
     "must start with a branching terminal"),
    ("(branching split2 (computation norm) (computation norm) add_tensors)",
     "unknown branching terminal 'split2'"),
    ("(branching clone_tensor2 (computation norm) (computation norm) concat)",
     "unknown aggregation terminal 'concat'"),
    ("(() (computation norm))", "production name"),
]


@pytest.mark.parametrize("text,expected", PARSE_CASES)
def test_malformed_text_names_the_problem(text, expected):
    with pytest.raises(ParseError, match=None) as info:
        einspace.parse(text)
    assert expected in str(info.value)


@pytest.mark.parametrize("text,path", [
    ("(sequential (computation norm) (computation nrom))", "at /1/0"),
    ("(sequential (computation norm) (routing identity norm identity))", "at /1/1"),
    ("(branching clone_tensor2 (computation norm) (computation norm) cat_tensors1d9t)", "at /3"),
])
def test_parse_errors_give_the_node_path(text, path):
    with pytest.raises(ParseError) as info:
        einspace.parse(text)
    assert path in str(info.value)


SHAPE_CASES = [
    # col2im without an im2col in the same routing module
    ("(routing identity (computation linear64) col2im)", (3, 28, 28), "at /2",
     "col2im"),
    # col2im after the inner module changed the token count
    ("(routing im2col3k1s1p (routing permute21 (computation linear16) permute21) col2im)",
     (3, 28, 28), "at /2", "expected 784 tokens"),
    # an im-only permutation in token mode
    ("(sequential (routing im2col1k1s0p (computation identity) identity) "
     "(routing permute132 (computation identity) identity))", (3, 8, 8), "at /1/0",
     "im mode only"),
    # a window larger than the image
    ("(routing im2col16k16s0p (computation linear16) col2im)", (3, 8, 8), "at /0",
     "smaller than the 16x16 window"),
    # add of different shapes
    ("(branching clone_tensor2 (computation linear16) (computation identity) add_tensors)",
     (3, 28, 28), "at /3", "add_tensors"),
    # a 4-way concatenation on two branches (the reference's bug)
    ("(branching clone_tensor2 (computation norm) (computation identity) cat_tensors1d4t)",
     (3, 28, 28), "at /3", "2 branches"),
    # odd split
    ("(branching group_dim2s1d (computation norm) (computation norm) cat_tensors1d2t)",
     (3, 28, 28), "at /0", "group_dim2s1d"),
    # dot product of incompatible operands
    ("(branching clone_tensor2 (computation linear16) (computation linear32) dot_product)",
     (3, 28, 28), "at /3", "dot_product"),
]


@pytest.mark.parametrize("text,shape,path,expected", SHAPE_CASES)
def test_shape_mismatch_names_the_node(text, shape, path, expected):
    d = einspace.parse(text)
    with pytest.raises(ShapeError) as info:
        einspace.annotate(d, shape)
    assert path in str(info.value) and expected in str(info.value)
    with pytest.raises(ShapeError):
        einspace.build(d, shape, num_classes=10)


@pytest.mark.parametrize("shape", [(0, 28, 28), (3,), (1, 2, 3, 4), ("a", 2, 2), (3, -1, 5),
                                   5, (2.5, 3, 3)])
def test_bad_input_shapes(shape):
    with pytest.raises(ShapeError, match="shape"):
        einspace.sample(shape, seed=0)


@pytest.mark.parametrize("kwargs,expected", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 10, "output_shape": (1, 4, 4)}, "not both"),
    ({"output_shape": (1, 0, 4)}, "output_shape"),
])
def test_bad_heads(kwargs, expected):
    with pytest.raises(ShapeError, match=expected):
        einspace.build(einspace.parse(CONV), (3, 8, 8), **kwargs)


def test_unknown_seed():
    with pytest.raises(EinspaceError, match="unknown seed 'resnet19'"):
        einspace.load_seed("resnet19")


MINIMAL_GRAMMAR = ("network -> sequential [{p}]\nsequential -> module module [1.0]\n"
                   "module -> computation [1.0]\ncomputation -> compute [1.0]\n"
                   "compute -> '{terminal}' [1.0]\n")


@pytest.mark.parametrize("p,terminal,expected", [
    (0.5, "norm", "network"),  # probabilities do not sum to 1
    (1.0, "convolution", "unknown computation terminal 'convolution'"),
])
def test_bad_grammar_files(tmp_path, p, terminal, expected):
    with pytest.raises(GrammarError, match="does not exist"):
        einspace.load_grammar(tmp_path / "missing.pcfg")
    grammar = tmp_path / "bad.pcfg"
    grammar.write_text(MINIMAL_GRAMMAR.format(p=p, terminal=terminal))
    with pytest.raises(GrammarError, match=expected):
        einspace.load_grammar(grammar)


def test_bad_overrides():
    with pytest.raises(GrammarError, match="not a terminal"):
        einspace.load_grammar(disable=["no_such_op"])
    with pytest.raises(GrammarError, match="not an alternative"):
        einspace.load_grammar(probabilities={"module": {"convolution": 0.5}})
    with pytest.raises(GrammarError, match="sum to"):
        einspace.load_grammar(probabilities={"module": {"computation": 0.9, "sequential": 0.9}})


def test_bad_config_keys(tmp_path):
    config = tmp_path / "space.yaml"
    config.write_text("budget:\n  max_parms: 10\n")
    with pytest.raises(ConfigError, match="budget.max_parms"):
        einspace.load_space_config(config)
    config.write_text("grammar:\n  file: nowhere.pcfg\n")
    with pytest.raises(GrammarError, match="does not exist"):
        einspace.load_space_config(config)
    config.write_text("budget:\n  max_params: -3\n")
    with pytest.raises(ConfigError, match="max_params"):
        einspace.load_space_config(config)
    config.write_text("budget: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        einspace.load_space_config(config)
    with pytest.raises(ConfigError, match="does not exist"):
        einspace.load_space_config(tmp_path / "absent.yaml")


def test_impossible_budget_is_a_clear_sampling_error():
    sampler = einspace.Sampler(budget=einspace.Budget(max_nodes=3))
    with pytest.raises(einspace.SamplingError, match="no architecture fits"):
        einspace.sample((3, 28, 28), seed=0, sampler=sampler)
