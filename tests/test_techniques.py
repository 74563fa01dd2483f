"""The seed papers' training techniques as recipe options: their maths against closed forms,
their validation, their effect on training, and bit-identical runs when they are off."""

import contextlib
import math
import pickle

import pytest
import torch
from test_trainer import FAST, classification_task, mlp, quadrant_images, regression_task, trace
from torch import nn
from torch.nn import functional as F

import einspace
from einspace.blocks.codebooks import PrototypeModule
from einspace.blocks.low_rank import LowRankLinearModule
from einspace.errors import ConfigError
from einspace.tasks.recipe import Recipe
from einspace.tasks.techniques import (
    APPLICATION_ORDER,
    OPTIONS,
    RECIPE_ORDER,
    DepthScaledLayerNorm,
    GradNoise,
    Guidance,
    Techniques,
    TrainingTechniques,
    grad_noise_std,
    grammar_layernorms,
    linear_cka,
    matched_layers,
    patch_mask,
)
from einspace.tasks.techniques.base import registered
from einspace.tasks.trainer import fit_normalizer, train

CPU = torch.device("cpu")
ONE_EPOCH = FAST.with_overrides(epochs=1)
# tokens (4, 16) -> norm -> rank-8 linear -> norm -> 15 prototypes -> norm
TOKENS = ("(sequential (routing im2col4k4s0p (computation linear16) identity) (sequential "
          "(computation norm) (sequential (computation lowrank_linear8) (sequential "
          "(computation norm) (sequential (computation prototype_layer15) (computation norm))))))")
TWO_LINEARS = ("(sequential (routing im2col8k8s0p (computation linear32) identity) (sequential "
               "(computation leakyrelu) (computation linear32)))")
CONV_GUIDE = ("(sequential (routing im2col3k1s1p (computation linear16) col2im) (sequential "
              "(computation leakyrelu) (routing im2col3k1s1p (computation linear16) col2im)))")
EVERY = {"grad_noise": True, "tract": True, "guidance": {"guide": CONV_GUIDE}, "proj_head": True,
         "layernorm_scaling": True, "mask_augmentation": {"patch": 2}, "ordered_dropout": True,
         "prototype_losses": True}


def tokens():
    return einspace.build(einspace.parse(TOKENS), (1, 8, 8), num_classes=4)


def runner(data=None, **techniques) -> TrainingTechniques:
    return TrainingTechniques(Techniques.from_dict(techniques), data, CPU, 0,
                              contextlib.nullcontext)


def no_hooks(model: nn.Module) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()) and \
        not any(p._backward_hooks for p in model.parameters())


# -- options ------------------------------------------------------------------------------------


def test_every_option_is_off_by_default_and_has_the_papers_defaults():
    assert Recipe().techniques == Techniques() and Techniques().enabled == ()
    assert set(Techniques.from_dict(EVERY).enabled) == set(OPTIONS) == set(EVERY)
    r = Recipe.from_dict({"techniques": {name: True for name in OPTIONS}}).techniques
    assert (r.grad_noise.eta, r.grad_noise.gamma, r.tract.lam) == (0.01, 0.55, 0.1)
    assert (r.guidance.guide, r.guidance.alpha) == ("resnet18", 1.0)
    assert (r.mask_augmentation.ratio, r.mask_augmentation.patch) == (0.5, 16)
    assert r.ordered_dropout.group_lasso == 5e-3
    assert (r.prototype_losses.r1, r.prototype_losses.r2) == (0.05, 0.05)


def test_yaml_forms_round_trip():
    recipe = Recipe.from_dict({"techniques": {"grad_noise": {"eta": "0.3"}, "tract": {},
                                              "guidance": None, "proj_head": False}})
    assert recipe.techniques.enabled == ("grad_noise", "tract")
    assert recipe.techniques.grad_noise == GradNoise(eta=0.3)
    assert recipe.to_dict()["techniques"] == {"grad_noise": {"eta": 0.3, "gamma": 0.55},
                                              "tract": {"lam": 0.1}}
    assert Recipe.from_dict(recipe.to_dict()) == recipe and hash(recipe) == hash(recipe)
    assert Recipe.from_dict({"techniques": {}}, base=recipe).techniques == Techniques()
    assert Recipe(techniques={"guidance": {"guide": TWO_LINEARS}}).techniques.guidance == \
        Guidance(guide=TWO_LINEARS)


@pytest.mark.parametrize("techniques, key", [
    ({"gradient_noise": True}, "unknown training technique 'gradient_noise'"),
    ({"grad_noise": {"eta": 0}}, r"grad_noise\.eta must be greater than 0"),
    ({"grad_noise": {"sigma": 1}}, r"unknown key 'sigma' in recipe\.techniques\.grad_noise"),
    ({"grad_noise": {"gamma": "fast"}}, r"grad_noise\.gamma must be a number"),
    ({"tract": {"lam": -1}}, r"tract\.lam"),
    ({"tract": "yes"}, r"recipe\.techniques\.tract must be true, false or a mapping"),
    ({"guidance": {"guide": "resnet99"}}, r"guidance\.guide 'resnet99' is not a shipped seed"),
    ({"guidance": {"guide": "(sequential"}}, r"guidance\.guide is not a valid architecture"),
    ({"guidance": {"alpha": True}}, r"guidance\.alpha must be a finite number"),
    ({"proj_head": {"kind": "mlp2"}}, r"unknown key 'kind' in recipe\.techniques\.proj_head"),
    ({"mask_augmentation": {"ratio": 1.0}}, r"mask_augmentation\.ratio must be less than 1"),
    ({"mask_augmentation": {"patch": 2.5}}, r"mask_augmentation\.patch must be a positive"),
    ({"ordered_dropout": {"group_lasso": -0.1}}, r"ordered_dropout\.group_lasso"),
    ({"prototype_losses": {"r1": math.nan}}, r"prototype_losses\.r1 must be a finite"),
])
def test_bad_options_raise_config_errors_naming_the_key(techniques, key):
    with pytest.raises(ConfigError, match=key):
        Recipe.from_dict({"techniques": techniques})


def test_every_registered_technique_is_listed_and_ordered_once():
    """A technique is declared in one module; the two orders name each registered one once."""
    names = set(registered())
    assert set(OPTIONS) == names and sorted(RECIPE_ORDER) == sorted(APPLICATION_ORDER) == \
        sorted(names)
    for name, technique in registered().items():
        assert OPTIONS[name] is technique.options_class
        assert technique.__module__ == f"einspace.tasks.techniques.{name}"


def test_recipes_with_techniques_survive_pickling():
    """Ray sends recipes to its workers by pickle."""
    recipe = Recipe.from_dict({"techniques": {"tract": True, "grad_noise": {"eta": 0.3}}})
    assert pickle.loads(pickle.dumps(recipe)) == recipe


def test_techniques_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"recipe\.techniques must be a mapping"):
        Recipe.from_dict({"techniques": ["tract"]})
    with pytest.raises(ConfigError, match=r"recipe\.techniques\.tract must be TrAct"):
        Techniques(tract=GradNoise())


# -- training -----------------------------------------------------------------------------------


def test_off_or_inert_techniques_leave_the_run_bit_identical():
    """Off, or enabled on a network without the layers they act on, a step is the plain one."""
    data = classification_task()
    plain = trace(train(mlp, data, ONE_EPOCH))
    off = ONE_EPOCH.with_overrides(techniques={name: False for name in OPTIONS})
    inert = ONE_EPOCH.with_overrides(techniques={"layernorm_scaling": True,
                                                 "ordered_dropout": True,
                                                 "prototype_losses": True})
    assert trace(train(mlp, data, off)) == plain == trace(train(mlp, data, inert))


@pytest.mark.parametrize("name", list(EVERY))
def test_every_technique_trains_for_an_epoch_repeatably_and_changes_the_run(name):
    data = classification_task()
    recipe = ONE_EPOCH.with_overrides(techniques={name: EVERY[name]})
    first = train(tokens, data, recipe, keep_model=True)
    assert first.status == "ok" and math.isfinite(first.history[0].train_loss)
    assert trace(train(tokens, data, recipe)) == trace(first)
    assert trace(first) != trace(train(tokens, data, ONE_EPOCH))
    assert no_hooks(first.model)
    assert train(mlp, data, recipe).status == "ok"


def test_gradient_noise_adds_the_expected_variance_to_the_update():
    """One plain SGD step (lr 1, no momentum or decay) with and without noise: the weights differ
    by the noise itself, of variance eta / (1 + 0)^0.55 = eta."""
    data = classification_task()
    wide = lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 2000), nn.Linear(2000, 4))  # noqa: E731
    recipe = Recipe(lr=1.0, momentum=0.0, weight_decay=0.0, schedule="constant", batch_size=512,
                    epochs=1, device="cpu")
    plain = train(wide, data, recipe, keep_model=True).model
    noisy = train(wide, data, recipe.with_overrides(techniques={"grad_noise": {"eta": 0.3}}),
                  keep_model=True).model
    diff = torch.cat([(a - b).flatten() for a, b in zip(plain.parameters(), noisy.parameters(),
                                                      strict=True)]).double()
    assert diff.numel() > 130_000
    assert abs(diff.mean().item()) < 0.01
    assert diff.var().item() == pytest.approx(0.3, rel=0.02)


def test_gradient_noise_anneals_with_the_step():
    techniques = runner(grad_noise={"eta": 1.0})
    weight = nn.Parameter(torch.zeros(200_000))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    for step in (0, 99):
        weight.grad = torch.zeros_like(weight)
        techniques.before_step(optimizer, step)
        expected = 1.0 / (1 + step) ** 0.55
        assert grad_noise_std(GradNoise(eta=1.0), step) ** 2 == pytest.approx(expected)
        assert weight.grad.var().item() == pytest.approx(expected, rel=0.02)


def tract_layer_grads(layer: nn.Module, x: torch.Tensor, upstream: torch.Tensor, **options):
    """Weight, bias and input gradients of ``sum(layer(x) * upstream)``, with TrAct on."""
    model = nn.Sequential(layer)
    techniques = runner(tract=options or True)
    techniques.attach(model)
    x = x.clone().requires_grad_()
    (model(x) * upstream).sum().backward()
    techniques.detach()
    return layer.weight.grad, layer.bias.grad, x.grad


@pytest.mark.parametrize("rows", [40, 3])  # more and fewer rows than input features
def test_tract_gradient_is_the_closed_form_on_a_linear_layer(rows):
    torch.manual_seed(0)
    layer, x = nn.Linear(5, 3), torch.randn(rows, 5)
    upstream = torch.randn(rows, 3)
    weight, bias, inputs = tract_layer_grads(layer, x, upstream, lam=0.2)
    a, g = x.double(), upstream.double()
    expected = g.T @ a @ torch.linalg.inv(a.T @ a / rows + 0.2 * torch.eye(5, dtype=a.dtype))
    torch.testing.assert_close(weight, expected.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bias, upstream.sum(0))                    # unchanged
    torch.testing.assert_close(inputs, upstream @ layer.weight.detach())  # unchanged


def test_tract_gradient_is_the_closed_form_on_a_convolution():
    torch.manual_seed(1)
    conv, x = nn.Conv2d(2, 5, 3, stride=2, padding=1), torch.randn(6, 2, 7, 5)
    upstream = torch.randn(6, 5, 4, 3)
    plain = torch.autograd.grad((conv(x) * upstream).sum(), conv.weight)[0]
    weight, _, _ = tract_layer_grads(conv, x, upstream)
    patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 18).double()
    gram = patches.T @ patches / patches.shape[0] + 0.1 * torch.eye(18, dtype=torch.float64)
    expected = plain.reshape(5, 18).double() @ torch.linalg.inv(gram)
    torch.testing.assert_close(weight, expected.reshape(5, 2, 3, 3).float(), rtol=1e-5,
                               atol=1e-6)


def test_tract_changes_only_the_first_layer_of_a_network():
    x, y = quadrant_images(32, 3)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    grads = []
    for techniques in (runner(), runner(tract=True)):
        torch.manual_seed(0)
        net = mlp()
        techniques.attach(net)
        net.eval()
        net(x)                      # scoring forwards do not pick the layer
        net.train()
        F.cross_entropy(net(x), y).backward()
        grads.append([p.grad for p in net.parameters()])
    (first_w, first_b, head_w, head_b), (tract_w, tract_b, tract_head_w, tract_head_b) = grads
    assert not torch.allclose(first_w, tract_w)
    for a, b in ((first_b, tract_b), (head_w, tract_head_w), (head_b, tract_head_b)):
        assert torch.equal(a, b)


# -- guidance -----------------------------------------------------------------------------------


def test_linear_cka_is_one_for_a_rotated_scaled_shifted_copy():
    torch.manual_seed(2)
    x = torch.randn(32, 3, 4, 4)
    q, _ = torch.linalg.qr(torch.randn(48, 48))
    assert linear_cka(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x, 3 * x.flatten(1) @ q + 2).item() == pytest.approx(1.0, abs=1e-5)
    y = torch.randn(32, 20)
    h = torch.eye(32, dtype=torch.float64) - 1 / 32
    k, l_ = (h @ m.double().flatten(1) @ m.double().flatten(1).T @ h for m in (x, y))
    expected = (k * l_).sum() / (k.norm() * l_.norm())
    assert linear_cka(x, y).item() == pytest.approx(expected.item(), rel=1e-5)
    assert linear_cka(y, x).item() == pytest.approx(expected.item(), rel=1e-5)


def test_linear_cka_of_a_constant_is_zero_without_nan_gradients():
    x = torch.ones(8, 5, requires_grad=True)
    value = linear_cka(x, torch.randn(8, 5))
    value.backward()
    assert value.item() == 0 and torch.isfinite(x.grad).all()


def test_layers_are_matched_evenly_first_and_last():
    assert matched_layers(5, 3) == [(0, 0), (2, 1), (4, 2)]
    assert matched_layers(3, 5) == [(0, 0), (1, 2), (2, 4)]
    assert matched_layers(20, 6) == [(0, 0), (4, 1), (8, 2), (11, 3), (15, 4), (19, 5)]
    assert matched_layers(1, 4) == [(0, 3)] and matched_layers(4, 1) == [(3, 0)]


def misalignment(model, data, guide: str) -> float:
    """alpha * sum(1 - CKA) of ``model`` against the guide a run with this seed uses."""
    techniques = runner(data, guidance={"guide": guide})
    techniques.attach(model)
    norm = fit_normalizer(data)
    x = torch.from_numpy(data.split("valid").x)
    x = (x - torch.as_tensor(norm.mean, dtype=torch.float32).reshape(-1, 1, 1)) / \
        torch.as_tensor(norm.std, dtype=torch.float32).reshape(-1, 1, 1)
    model.train()
    with torch.no_grad():
        out = model(x)
        value = techniques.loss(model, x, None, out, torch.zeros(()), True).item()
    techniques.detach()
    return value


def test_guidance_pulls_the_representations_towards_the_guide():
    data = classification_task()
    target = lambda: einspace.build(einspace.parse(TWO_LINEARS), (1, 8, 8), num_classes=4)  # noqa: E731
    recipe = FAST.with_overrides(epochs=2)
    plain = train(target, data, recipe, keep_model=True).model
    guided = train(target, data, recipe.with_overrides(
        techniques={"guidance": {"guide": CONV_GUIDE, "alpha": 1.0}}), keep_model=True).model
    before = misalignment(target(), data, CONV_GUIDE)
    after_plain, after_guided = (misalignment(m, data, CONV_GUIDE) for m in (plain, guided))
    assert after_guided < 0.8 * min(before, after_plain)


def test_default_guide_trains_and_a_guide_that_does_not_fit_is_a_config_error():
    data = classification_task()
    result = train(mlp, data, ONE_EPOCH.with_overrides(techniques={"guidance": True}))
    assert result.status == "ok"
    too_big = "(routing im2col16k16s0p (computation linear16) col2im)"
    with pytest.raises(ConfigError, match=r"guidance\.guide .* does not fit"):
        train(mlp, data, ONE_EPOCH.with_overrides(techniques={"guidance": {"guide": too_big}}))


# -- projection head ----------------------------------------------------------------------------


def test_projection_head_trains_the_classifier_as_a_probe_on_detached_features():
    x, y = (torch.from_numpy(a) for a in quadrant_images(16, 4))
    net = mlp()
    techniques = runner(classification_task(), proj_head=True)
    extra = techniques.attach(net)
    assert len(extra) == 6                                  # Linear, BatchNorm, Linear
    features = []
    net.head.fc.register_forward_pre_hook(lambda m, args: features.append(args[0]))
    net.train()
    out = net(x)
    loss = techniques.loss(net, x, y, out, F.cross_entropy(out, y), True)
    loss.backward()
    fc = net.head.fc
    probe = F.cross_entropy(F.linear(features[0].detach(), fc.weight, fc.bias), y)
    expected = torch.autograd.grad(probe, fc.weight)[0]
    torch.testing.assert_close(fc.weight.grad, expected)      # the probe is fc's only loss
    assert not torch.allclose(out, F.linear(features[0], fc.weight, fc.bias))  # the MLP head
    net.eval()
    torch.testing.assert_close(net(x), fc(features[-1]))     # scoring output: the probe


def test_projection_head_scores_well_and_needs_classification():
    result = train(mlp, classification_task(), FAST.with_overrides(
        techniques={"proj_head": True}), keep_model=True)
    assert result.status == "ok" and result.score > 0.8 and no_hooks(result.model)
    identity = lambda: einspace.build(einspace.parse("(computation identity)"), (1, 8, 8),  # noqa: E731
                                      output_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="proj_head needs a classification task"):
        train(identity, regression_task(), FAST.with_overrides(techniques={"proj_head": True}))


# -- LayerNorm scaling, masks, ordered dropout, prototypes ---------------------------------------


def test_layernorm_scaling_divides_the_lth_grammar_norm_by_sqrt_l():
    text = ("(sequential (routing im2col4k4s0p (computation linear16) identity) (sequential "
            "(computation norm) (sequential (computation sigmoid_attention4h) "
            "(computation norm))))")
    net = einspace.build(einspace.parse(text), (1, 8, 8), num_classes=4)
    keys = list(net.state_dict())
    norms = [norm for _, _, norm in grammar_layernorms(net)]
    assert len(norms) == 2 and sum(isinstance(m, nn.LayerNorm) for m in net.modules()) == 4
    runner(layernorm_scaling=True).attach(net)
    scaled = [m for m in net.modules() if isinstance(m, DepthScaledLayerNorm)]
    assert [m.depth for m in scaled] == [1, 2] and list(net.state_dict()) == keys
    x = torch.randn(3, 4, 16)
    for norm, new in zip(norms, scaled, strict=True):
        assert new.weight is norm.weight and new.bias is norm.bias
        torch.testing.assert_close(new(x), norm(x) / math.sqrt(new.depth))
    attention_norms = [m for m in net.modules() if type(m) is nn.LayerNorm]
    assert len(attention_norms) == 2                          # QK norms are not scaled


def test_patch_masks_zero_the_given_share_of_whole_patches():
    generator = torch.Generator().manual_seed(0)
    mask = patch_mask((5, 3, 8, 8), 0.5, 2, generator)
    assert mask.shape == (5, 1, 8, 8) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask.mean((1, 2, 3)).tolist() == [0.5] * 5
    blocks = mask.reshape(5, 4, 2, 4, 2)
    assert torch.equal(blocks.amax((2, 4)), blocks.amin((2, 4)))   # constant per 2x2 patch
    assert not torch.equal(mask[0], mask[1])
    again = patch_mask((5, 3, 8, 8), 0.5, 2, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    ragged = patch_mask((2, 1, 7, 5), 0.3, 2, generator)     # 4 x 3 patches, 4 masked
    assert ragged.shape == (2, 1, 7, 5)
    assert patch_mask((2, 10, 6), 0.5, 3, generator).shape == (2, 10, 1)
    assert patch_mask((2, 12), 0.5, 3, generator).sum(1).tolist() == [6.0, 6.0]


def test_mask_augmentation_masks_training_batches_only():
    seen = {True: [], False: []}

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 4)

        def forward(self, x):
            seen[self.training].append(float((x == 0).float().mean()))
            return self.fc(x.flatten(1))

    train(Probe(), classification_task(), ONE_EPOCH.with_overrides(
        techniques={"mask_augmentation": {"ratio": 0.25, "patch": 4}}))
    assert seen[True] == [0.25] * 8 and max(seen[False]) < 0.01


def test_ordered_dropout_keeps_the_first_k_rank_components():
    torch.manual_seed(3)
    net = tokens()
    techniques = runner(ordered_dropout=True)
    techniques.attach(net)
    layer = next(m for m in net.modules() if isinstance(m, LowRankLinearModule))
    dropout = techniques.active[0]
    x = torch.randn(5, 4, 16)
    dropout.kept = (layer.down, 3)
    u, v = layer.up.weight[:, :3], layer.down.weight[:3]
    torch.testing.assert_close(layer(x), x @ v.T @ u.T + layer.up.bias)
    dropout.kept = None
    torch.testing.assert_close(layer(x), layer.up(layer.down(x)))


def test_ordered_dropout_adds_distillation_and_group_lasso():
    x, y = (torch.from_numpy(a) for a in quadrant_images(8, 5))
    net = tokens()
    net.train()
    values = []
    for weight in (0.0, 0.5):
        techniques = runner(ordered_dropout={"group_lasso": weight})
        techniques.attach(net)
        out = net(x)
        values.append(techniques.loss(net, x, y, out, torch.zeros(()), True))
        techniques.detach()
    layer = next(m for m in net.modules() if isinstance(m, LowRankLinearModule))
    assert values[0] > 0                  # distillation against the full pass (same draw)
    torch.testing.assert_close(values[1] - values[0], 0.5 * layer.group_lasso())


def test_prototype_losses_are_r1_and_r2_of_the_squared_distances():
    x, y = (torch.from_numpy(a) for a in quadrant_images(8, 6))
    net = tokens()
    layer = next(m for m in net.modules() if isinstance(m, PrototypeModule))
    inputs = []
    layer.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    techniques = runner(prototype_losses={"r1": 1.0, "r2": 2.0})
    techniques.attach(net)
    net.train()
    out = net(x)
    loss = techniques.loss(net, x, y, out, torch.zeros(()), True)
    z = inputs[0].reshape(-1, inputs[0].shape[-1])
    d = torch.cdist(z.double(), layer.prototypes.double()) ** 2      # (tokens, prototypes)
    expected = d.min(0).values.mean() + 2.0 * d.min(1).values.mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
