"""Weight inheritance (einspace.inheritance): a child takes its parents' trained tensors, bit for
bit, on every node whose subtree and input shape are unchanged, and starts fresh elsewhere.

Parents are "trained" by a few SGD steps in train mode (so weights and BatchNorm statistics differ
from any initialisation).  "Fresh" means equal to a plain build of the child under the same torch
seed.  Expected keys are written out by hand for small CNNs, so the tests do not lean on the
module's own path attribution.
"""

from __future__ import annotations

import random

import pytest
import torch

import einspace
from einspace import build, parse
from einspace.compiler import build_traced
from einspace.inheritance import InheritanceError, Parent, inherit, origins_from_regions
from einspace.mutation import mutate, mutate_traced

SHAPE = (3, 8, 8)
CLASSES = 3
CONV = "(routing {} (computation linear16) col2im)"
CONV3 = CONV.format("im2col3k1s1p")
# backbone.0 conv (0,) | .1 BatchNorm (1,0,0) | .2 conv (1,1,0) | .3 leakyrelu | .4 BatchNorm
PARENT = parse(f"(sequential {CONV3} (sequential (computation norm) (sequential {CONV3} "
               f"(sequential (computation leakyrelu) (computation norm)))))")
SEED = 7


def trained(derivation, shape=SHAPE, seed=0, classes=CLASSES) -> dict[str, torch.Tensor]:
    """A state_dict after three SGD steps in train mode (weights and BN statistics moved)."""
    torch.manual_seed(seed)
    net = build(derivation, shape, num_classes=classes)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    for _ in range(3):
        x, y = torch.randn(8, *shape), torch.randint(0, classes, (8,))
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def fresh(child, shape=SHAPE) -> dict[str, torch.Tensor]:
    torch.manual_seed(SEED)
    return build(child, shape, num_classes=CLASSES).state_dict()


def outside(child, site) -> dict:
    """A one-node replacement's origin map: every path not at or above ``site``, unchanged."""
    return {path: (0, path) for path, _ in child.walk()
            if path[:len(site)] != site and path != site[:len(path)]}


def inherited(child, parents, origins, shape=SHAPE):
    torch.manual_seed(SEED)
    return inherit(child, shape, parents, origins, num_classes=CLASSES)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def check_split(state, parent_state, fresh_state, from_parent: dict[str, str]):
    """Keys in ``from_parent`` (child key -> parent key) hold the parent's tensors; every other
    key holds the fresh build's."""
    for key, tensor in state.items():
        if key in from_parent:
            assert same(tensor, parent_state[from_parent[key]]), key
        else:
            assert same(tensor, fresh_state[key]), key


def test_one_mutated_leaf_keeps_every_other_node_bit_for_bit():
    site = (1, 1, 0, 0)  # the second convolution's window: 3x3 -> 1x1
    child = PARENT.replace(site, "im2col1k1s0p")
    parent_state = trained(PARENT)
    result = inherited(child, [Parent(PARENT, SHAPE, parent_state)], outside(child, site))
    state = result.network.state_dict()
    kept = [k for k in state if not k.startswith("backbone.2.")]
    check_split(state, parent_state, fresh(child), {k: k for k in kept})
    for key in ("backbone.1.running_mean", "backbone.4.running_var",
                "backbone.4.num_batches_tracked"):
        assert not same(parent_state[key], fresh(PARENT)[key])  # trained, so the test bites
    conv = 16 * 16 + 16
    assert result.record.fresh == conv
    assert result.record.inherited == sum(p.numel() for p in result.network.parameters()) - conv
    assert result.record.per_parent == (result.record.inherited,)


def test_matching_follows_paths_when_module_names_shift():
    site = (1, 0)  # the first BatchNorm becomes BatchNorm + leakyrelu: later indices move by one
    child = PARENT.replace(site, parse("(sequential (computation norm) (computation leakyrelu))"))
    parent_state = trained(PARENT)
    result = inherited(child, [Parent(PARENT, SHAPE, parent_state)], outside(child, site))
    moved = {"backbone.3": "backbone.2", "backbone.5": "backbone.4"}
    pairs = {k: k for k in parent_state if k.startswith(("backbone.0.", "head."))}
    for key in result.network.state_dict():
        prefix = key.rsplit(".", 1)[0]
        if prefix in moved:
            pairs[key] = moved[prefix] + key[len(prefix):]
    check_split(result.network.state_dict(), parent_state, fresh(child), pairs)
    assert result.record.fresh == 2 * 16  # the new BatchNorm, though its text is "norm" too


def test_nodes_that_see_a_new_input_shape_start_fresh():
    child = PARENT.replace((0, 1, 0), "linear32")  # the first conv widens to 32 channels
    parent_state = trained(PARENT)
    result = inherited(child, [Parent(PARENT, SHAPE, parent_state)], outside(child, (0, 1, 0)))
    state = result.network.state_dict()
    # BatchNorm 1 and conv 2 now read 32 channels; BatchNorm 4 and the head read 16 as before.
    kept = {k: k for k in state if k.startswith(("backbone.4.", "head."))}
    check_split(state, parent_state, fresh(child), kept)
    for key, tensor in state.items():
        if key in parent_state and parent_state[key].shape != tensor.shape:
            assert key not in kept


def test_a_changed_last_module_gives_a_fresh_head():
    site = (1, 1, 1, 1, 0)  # the final BatchNorm becomes a leakyrelu
    child = PARENT.replace(site, "leakyrelu")
    parent_state = trained(PARENT)
    result = inherited(child, [Parent(PARENT, SHAPE, parent_state)], outside(child, site))
    kept = {k: k for k in parent_state if k.startswith(("backbone.0.", "backbone.1.",
                                                        "backbone.2."))}
    check_split(result.network.state_dict(), parent_state, fresh(child), kept)


def test_copies_of_a_repeated_module_inherit_from_their_own_copy():
    shape = (8, 16)
    parent = parse("(sequential (branching clone_tensor4 (computation linear16) cat_tensors2d4t) "
                   "(sequential (computation leakyrelu) (computation linear32)))")
    child = parent.replace((1, 0, 0), "norm")
    parent_state = trained(parent, shape)
    result = inherited(child, [Parent(parent, shape, parent_state)], outside(child, (1, 0, 0)),
                       shape)
    state = result.network.state_dict()
    copies = [f"backbone.0.inners.{i}.weight" for i in range(4)]
    assert not same(parent_state[copies[0]], parent_state[copies[1]])
    pairs = {k: k for k in state if k.startswith(("backbone.0.", "backbone.2.", "head."))}
    check_split(state, parent_state, fresh(child, shape), pairs)


def test_the_child_loads_strictly_into_its_own_build_and_runs():
    rng = random.Random(3)
    parent = einspace.load_seed("resnet18")
    shape = (3, 16, 16)
    parent_state = trained(parent, shape)
    for _ in range(4):
        made = mutate_traced(parent, shape, rng)
        result = inherited(made.child, [Parent(parent, shape, parent_state)], made.origins, shape)
        torch.manual_seed(0)
        net = build(made.child, shape, num_classes=CLASSES)
        net.load_state_dict(result.network.state_dict(), strict=True)
        net.eval()
        with torch.inference_mode():
            out = net(torch.randn(2, *shape))
        assert out.shape == (2, CLASSES) and torch.isfinite(out).all()
        total = sum(p.numel() for p in net.parameters())
        assert result.record.inherited + result.record.fresh == total
        assert result.record.inherited > 0


def test_inheriting_does_not_disturb_the_fresh_draws():
    """Whatever is inherited, every other tensor is the child's plain build under the same
    seed (building the parent for its layout must not consume the caller's RNG)."""
    rng = random.Random(11)
    parent = einspace.load_seed("vit")
    shape = (3, 16, 16)
    parent_state = trained(parent, shape)
    for _ in range(3):
        made = mutate_traced(parent, shape, rng)
        state = inherited(made.child, [Parent(parent, shape, parent_state)], made.origins,
                          shape).network.state_dict()
        plain = fresh(made.child, shape)
        parent_tensors = list(parent_state.values())
        for key, tensor in state.items():
            assert same(tensor, plain[key]) or any(same(tensor, t) for t in parent_tensors), key


def keys_under(derivation, shape, root) -> list[str]:
    """State keys of the modules compiled from nodes at or below ``root``, in state order."""
    net, owners = build_traced(derivation, shape, num_classes=CLASSES)
    found = []
    for key in net.state_dict():
        if key.startswith("head."):
            continue
        module = key.rpartition(".")[0]
        while module not in owners:
            module = module.rpartition(".")[0]
        if owners[module][:len(root)] == root:
            found.append(key)
    return found


def test_crossover_children_inherit_from_both_parents_where_their_subtrees_come_from():
    a = PARENT
    b = parse(f"(sequential {CONV.format('im2col1k1s0p')} (sequential (computation leakyrelu) "
              f"(sequential {CONV3} (sequential (computation norm) (computation norm)))))")
    states = [trained(a, seed=1), trained(b, seed=2)]
    parents = [Parent(a, SHAPE, states[0]), Parent(b, SHAPE, states[1])]
    checked = 0
    for seed in range(12):
        made = einspace.recombine(a, b, SHAPE, seed=seed)
        if made.method == "reshaped":
            continue
        result = inherited(made.child, parents, made.origins)
        state = result.network.state_dict()
        if not all(result.record.per_parent):
            continue
        for path, k, source in made.regions():
            mine = keys_under(made.child, SHAPE, path)
            theirs = keys_under((a, b)[k], SHAPE, source)
            for key, parent_key in zip(mine, theirs, strict=True):
                assert same(state[key], states[k][parent_key]), (path, key)
        checked += 1
    assert checked >= 2


def test_origins_rebuilt_from_regions_equal_the_full_map():
    a, b = PARENT, einspace.load_seed("resnet18")
    for seed in range(4):
        made = einspace.recombine(a, b, SHAPE, seed=seed)
        regions = [(list(p), k, list(s)) for p, k, s in made.regions()]  # as a trial records
        assert origins_from_regions(made.child, regions) == made.origins


def test_mutate_traced_makes_the_same_child_and_names_its_copied_nodes():
    parent = einspace.load_seed("resnet18")
    shape = (3, 16, 16)
    for seed in range(20):
        made = mutate_traced(parent, shape, random.Random(seed))
        assert made.child == mutate(parent, shape, random.Random(seed))
        assert made.site not in made.origins
        for path, (k, source) in made.origins.items():
            assert k == 0 and made.child.get(path) == parent.get(source)


def test_a_splitter_change_maps_the_kept_inner_module():
    parent = parse("(sequential (branching clone_tensor2 (computation linear16) "
                   "(computation linear32) cat_tensors2d2t) (computation leakyrelu))")
    shape = (8, 16)
    sites = set()
    for seed in range(60):
        made = mutate_traced(parent, shape, random.Random(seed))
        for path, (_, source) in made.origins.items():
            assert made.child.get(path) == parent.get(source)
        if made.site == (0,) and isinstance(made.child.get((0,)), einspace.Derivation) \
                and made.child.get((0, 0)) != "clone_tensor2":
            sites.add(made.child.get((0, 0)))
    assert sites, "some mutation changed the splitter"


def test_weights_that_do_not_fit_the_parent_are_a_clear_error():
    state = trained(PARENT)
    del state["backbone.2.weight"]
    with pytest.raises(InheritanceError, match="parent 0's weights do not fit.*missing"):
        inherited(PARENT, [Parent(PARENT, SHAPE, state)], outside(PARENT, (0,)))


def test_an_origin_naming_a_missing_parent_is_a_clear_error():
    with pytest.raises(InheritanceError, match="parent 1, but 1 parent"):
        inherited(PARENT, [Parent(PARENT, SHAPE, trained(PARENT))], {(0,): (1, (0,))})


def test_a_dense_head_is_inherited_like_a_classifier():
    site = (1, 1, 0, 0)
    child = PARENT.replace(site, "im2col1k1s0p")
    torch.manual_seed(0)
    parent_net = build(PARENT, SHAPE, output_shape=(8, 8))
    with torch.no_grad():
        for tensor in parent_net.parameters():
            tensor.add_(1.0)  # "trained": differs from any initialisation
    parent_state = parent_net.state_dict()
    torch.manual_seed(SEED)
    result = inherit(child, SHAPE, [Parent(PARENT, SHAPE, parent_state)], outside(child, site),
                     output_shape=(8, 8))
    state = result.network.state_dict()
    assert [k for k in state if k.startswith("head.")] == ["head.proj.weight", "head.proj.bias"]
    for key in ("head.proj.weight", "head.proj.bias", "backbone.0.weight"):
        assert same(state[key], parent_state[key])
    assert result.record.fresh == 16 * 16 + 16
