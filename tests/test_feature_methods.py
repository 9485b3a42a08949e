"""The feature methods: ReviewKD (ABF + HCL) and CAT-KD (class activation maps) on every pair of SPEC section 4."""
from __future__ import annotations

import io
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from trainables.checkpoint import load_checkpoint
from trainables.config import RunConfig
from trainables.distillers import (
    DistillContext,
    catkd_loss,
    class_activation_maps,
    get_method,
    hcl_loss,
)
from trainables.distillers.reviewkd import resize_to, select_stages
from trainables.engine import fit
from trainables.models import ModelOutput, create_model

NUM_CLASSES = 10
METHODS = ("reviewkd", "catkd")

# (teacher, student, input side, dataset style)
PAIRS = [
    ("resnet32x4", "resnet8x4", 32, "cifar"),
    ("vgg13", "vgg8", 32, "cifar"),
    ("wrn_40_2", "shufflenetv1", 32, "cifar"),
    ("resnet50_cifar", "mobilenetv2", 32, "cifar"),
    ("resnet32x4", "shufflenetv1", 32, "cifar"),
    ("vgg13", "mobilenetv2", 32, "cifar"),
    ("wrn_40_2", "wrn_40_1", 32, "cifar"),
    ("vgg13", "mobilenetv2", 64, "cifar"),  # TinyImageNet size; student maps smaller than the teacher's
    ("wrn_40_2", "wrn_40_1", 64, "cifar"),
    ("resnet34", "resnet18", 64, "imagenet"),
    ("resnet50", "mobilenetv1", 64, "imagenet"),
]

# ReviewKD's automatic levels (stage indices, the pooled level comes on top): the official layout.
EXPECTED_STAGES = {
    ("resnet32x4", "resnet8x4"): ((1, 2, 3), (1, 2, 3)),
    ("vgg13", "vgg8"): ((1, 2, 3, 4), (1, 2, 3, 4)),
    ("wrn_40_2", "shufflenetv1"): ((1, 2, 3), (0, 1, 2)),
    ("resnet50_cifar", "mobilenetv2"): ((2, 3, 4, 5), (1, 2, 3, 4)),
    ("resnet32x4", "shufflenetv1"): ((1, 2, 3), (1, 2, 3)),
    ("vgg13", "mobilenetv2"): ((2, 3, 4, 5), (1, 2, 3, 4)),
    ("wrn_40_2", "wrn_40_1"): ((0, 1, 2), (0, 1, 2)),
    ("resnet34", "resnet18"): ((1, 2, 3, 4), (1, 2, 3, 4)),
    ("resnet50", "mobilenetv1"): ((1, 2, 3, 4), (1, 2, 3, 4)),
}


class Zoo:
    """Models built once per module (the big teachers are the slow part), teacher outputs cached."""

    def __init__(self):
        self.models: dict[str, torch.nn.Module] = {}
        self.inputs: dict[int, torch.Tensor] = {}
        self.teacher_outputs: dict[tuple[str, int], ModelOutput] = {}

    def model(self, name: str) -> torch.nn.Module:
        if name not in self.models:
            torch.manual_seed(sum(map(ord, name)))
            self.models[name] = create_model(name, NUM_CLASSES)
        return self.models[name]

    def teacher(self, name: str) -> torch.nn.Module:
        t = self.model(name).eval()
        for p in t.parameters():
            p.requires_grad_(False)
        return t

    def student(self, name: str) -> torch.nn.Module:
        s = self.model(name).train()
        s.zero_grad(set_to_none=True)
        return s

    def x(self, size: int) -> torch.Tensor:
        if size not in self.inputs:
            self.inputs[size] = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        return self.inputs[size]

    def teacher_out(self, name: str, size: int) -> ModelOutput:
        key = (name, size)
        if key not in self.teacher_outputs:
            with torch.no_grad():
                self.teacher_outputs[key] = self.teacher(name).forward_features(self.x(size))
        return self.teacher_outputs[key]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Batch-2 tensors gain nothing from intra-op threads, and on a shared 2-core machine spinning
    OpenMP threads made this module ~10x slower; the previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def zoo():
    return Zoo()


def context_for(zoo: Zoo, teacher: str, student: str, size: int) -> DistillContext:
    return DistillContext(num_classes=NUM_CLASSES, class_counts=tuple(range(NUM_CLASSES, 0, -1)),
                          student=zoo.student(student), teacher=zoo.teacher(teacher), teacher_arch=teacher,
                          student_arch=student, input_shape=(3, size, size))


def detached(out: ModelOutput) -> ModelOutput:
    return ModelOutput(out.logits.detach(), [s.detach() for s in out.stages], out.pooled.detach())


def state_round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ------------------------------------------------------------------------- every pair, both methods


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("teacher,student,size,style", PAIRS, ids=[f"{t}-{s}-{n}" for t, s, n, _ in PAIRS])
def test_every_pair_builds_trains_and_round_trips(zoo, method, teacher, student, size, style):
    spec = get_method(method)
    hp = spec.resolve(dataset_style=style, teacher_arch=teacher, student_arch=student)
    ctx = context_for(zoo, teacher, student, size)
    torch.manual_seed(1)
    distiller = spec.build(ctx, hp)
    assert distiller.needs_features
    # the dummy forward restored the models' modes
    assert ctx.student.training and all(m.training for m in ctx.student.modules())
    assert not any(m.training for m in ctx.teacher.modules())
    if method == "reviewkd" and (teacher, student) in EXPECTED_STAGES:
        assert (distiller.student_stages, distiller.teacher_stages) == EXPECTED_STAGES[(teacher, student)]

    t_out = zoo.teacher_out(teacher, size)
    s_out = ctx.student.forward_features(zoo.x(size))
    targets = torch.tensor([0, 1])
    loss = distiller(s_out, t_out, targets)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()

    student_grads = [p.grad for p in ctx.student.parameters() if p.grad is not None]
    assert student_grads and all(torch.isfinite(g).all() for g in student_grads)
    stem = next(ctx.student.parameters())
    assert stem.grad is not None and stem.grad.abs().sum() > 0  # reaches the first layer
    assert all(p.grad is None for p in ctx.teacher.parameters())
    if method == "reviewkd":
        params = list(distiller.parameters())
        assert params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
        assert sum(p.grad.abs().sum() for p in params) > 0
    else:
        assert list(distiller.parameters()) == [] and distiller.state_dict() == {}
        # the CAMs carry gradients into the student's classifier weights (not its bias: no bias in the CAM)
        assert ctx.student.classifier.weight.grad.abs().sum() > 0
        assert ctx.student.classifier.bias.grad is None

    # checkpoint round trip into a freshly built distiller (eval mode: running statistics included)
    state = state_round_trip(distiller.state_dict())
    torch.manual_seed(2)
    fresh = spec.build(ctx, hp)
    if method == "reviewkd":  # another initialisation: the loaded state is what makes them agree
        assert any(not torch.equal(v, state[k]) for k, v in fresh.state_dict().items())
    fresh.load_state_dict(state)
    distiller.eval()
    fresh.eval()
    s_fixed = detached(s_out)
    with torch.no_grad():
        assert torch.equal(fresh(s_fixed, t_out, targets), distiller(s_fixed, t_out, targets))


def test_reviewkd_student_maps_larger_than_the_teachers_are_pooled_down(zoo):
    # mobilenetv2 teacher maps (4x4, 2x2, 2x2) are smaller than resnet8's (32, 16, 8)
    spec = get_method("reviewkd")
    ctx = context_for(zoo, "mobilenetv2", "resnet8", 32)
    distiller = spec.build(ctx, spec.resolve(teacher_arch="mobilenetv2", student_arch="resnet8"))
    t_out = zoo.teacher_out("mobilenetv2", 32)
    s_out = ctx.student.forward_features(zoo.x(32))
    t_levels = [t_out.stages[i] for i in distiller.teacher_stages] + [t_out.pooled[:, :, None, None]]
    fused = distiller.fuse(s_out, [f.shape[-2:] for f in t_levels])
    assert [f.shape for f in fused] == [f.shape for f in t_levels]
    loss = distiller(s_out, t_out, torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss)


def test_reviewkd_level_selection_and_mid_channels(zoo):
    assert select_stages(4, 4) == ([1, 2, 3], [1, 2, 3])
    assert select_stages(4, 3) == ([1, 2, 3], [0, 1, 2])
    assert select_stages(6, 5) == ([2, 3, 4, 5], [1, 2, 3, 4])
    assert select_stages(5, 3, num_stages=2) == ([3, 4], [1, 2])
    with pytest.raises(ValueError, match="use at most 3"):
        select_stages(5, 3, num_stages=4)
    spec = get_method("reviewkd")
    ctx = context_for(zoo, "resnet32x4", "resnet8x4", 32)
    auto = spec.build(ctx, spec.resolve(teacher_arch="resnet32x4", student_arch="resnet8x4"))
    assert auto.mid_channels == 256  # min(512, resnet8x4's 256 channels), as the official code
    assert auto.abfs[-1].attention is None and all(a.attention is not None for a in auto.abfs[:-1])
    assert auto.abfs[0].reduce[0].in_channels == 64 and auto.abfs[0].project[0].out_channels == 64
    set_by_hand = spec.build(ctx, spec.resolve({"mid_channels": 32, "num_stages": 2}))
    assert set_by_hand.mid_channels == 32 and set_by_hand.student_stages == (2, 3) and len(set_by_hand.abfs) == 3


def test_reviewkd_one_sample_batch_at_the_pooled_level(zoo):
    spec = get_method("reviewkd")
    ctx = context_for(zoo, "resnet32x4", "resnet8x4", 32)
    distiller = spec.build(ctx, spec.resolve())
    x = zoo.x(32)[:1]
    with torch.no_grad():
        t_out = ctx.teacher.forward_features(x)
    loss = distiller(ctx.student.forward_features(x), t_out, torch.tensor([0]))
    assert torch.isfinite(loss)


def test_resize_to_pools_down_and_repeats_up():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(resize_to(x, (2, 2)), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    up = resize_to(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), (4, 4))
    assert torch.equal(up[0, 0, :2, :2], torch.ones(2, 2)) and torch.equal(up[0, 0, 2:, 2:], torch.full((2, 2), 4.0))
    assert resize_to(x, (4, 4)) is x


# ------------------------------------------------------------------------- HCL against a plain computation


def _block_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, c, size, h // size, size, w // size).mean(dim=(3, 5))


def _mse(a, b):
    return ((a - b) ** 2).sum() / a.numel()


# side -> [(pool size or None for full resolution, weight)]: weights 1, 1/2, 1/4, 1/8 over the used sizes
PLAIN_HCL_TERMS = {
    8: [(None, 1.0), (4, 0.5), (2, 0.25), (1, 0.125)],
    4: [(None, 1.0), (2, 0.5), (1, 0.25)],
    2: [(None, 1.0), (1, 0.5)],
    1: [(None, 1.0)],
}


def test_hcl_matches_a_plain_computation():
    g = torch.Generator().manual_seed(0)
    sizes = [8, 4, 2, 1]
    fs = [torch.randn(3, 5, s, s, generator=g, dtype=torch.float64, requires_grad=True) for s in sizes]
    ft = [torch.randn(3, 5, s, s, generator=g, dtype=torch.float64) for s in sizes]
    expected = 0.0
    for a, b, side in zip(fs, ft, sizes):
        terms = PLAIN_HCL_TERMS[side]
        level = sum(w * _mse(a if p is None else _block_mean(a, p), b if p is None else _block_mean(b, p))
                    for p, w in terms)
        expected = expected + level / sum(w for _, w in terms)
    got = hcl_loss(fs, ft)
    assert torch.allclose(got, expected, rtol=1e-12, atol=0)
    # gradients of the student maps agree too
    g_got = torch.autograd.grad(got, fs)
    g_expected = torch.autograd.grad(expected, fs)
    for a, b in zip(g_got, g_expected):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)
    # identical maps: zero; float32 inputs in, float32 out; mismatched shapes refused
    assert hcl_loss([ft[0]], [ft[0].clone()]).item() == 0.0
    assert hcl_loss([fs[1].float()], [ft[1].float()]).dtype == torch.float32
    with pytest.raises(ValueError, match="same shape"):
        hcl_loss([fs[0]], [ft[1]])


# ------------------------------------------------------------------------- CAT-KD against plain loops


def _plain_cams(features, weight, bias=None):
    n, d, h, w = features.shape
    cams = torch.zeros(n, weight.shape[0], h, w, dtype=features.dtype)
    for c in range(weight.shape[0]):
        cams[:, c] = sum(weight[c, k] * features[:, k] for k in range(d))
        if bias is not None:
            cams[:, c] += bias[c]
    return cams


def _plain_adaptive_pool(x, r):
    n, c, h, w = x.shape
    out = torch.zeros(n, c, r, r, dtype=x.dtype)
    for i in range(r):
        h0, h1 = (i * h) // r, math.ceil((i + 1) * h / r)
        for j in range(r):
            w0, w1 = (j * w) // r, math.ceil((j + 1) * w / r)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(dim=(2, 3))
    return out


@pytest.mark.parametrize("h,w,r", [(8, 8, 2), (7, 5, 2), (4, 4, 4), (3, 3, 4), (2, 2, 1)])
def test_class_activation_maps_match_plain_loops(h, w, r):
    g = torch.Generator().manual_seed(h * 10 + w)
    f = torch.randn(2, 6, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 6, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    plain = _plain_cams(f, weight)
    assert torch.allclose(class_activation_maps(f, weight), plain, atol=1e-12)
    assert torch.allclose(class_activation_maps(f, weight, bias), _plain_cams(f, weight, bias), atol=1e-12)
    # pooling the features first is exact
    assert torch.allclose(class_activation_maps(f, weight, resolution=r), _plain_adaptive_pool(plain, r), atol=1e-12)


@pytest.mark.parametrize("normalize", [False, True])
def test_catkd_loss_is_a_plain_mse_of_pooled_maps(normalize):
    g = torch.Generator().manual_seed(3)
    fs = torch.randn(3, 6, 4, 4, generator=g, dtype=torch.float64)
    ft = torch.randn(3, 9, 8, 8, generator=g, dtype=torch.float64)  # other channels and size
    ws = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(5, 9, generator=g, dtype=torch.float64)

    def plain(ws):
        a = _plain_adaptive_pool(_plain_cams(fs, ws), 2)
        b = _plain_adaptive_pool(_plain_cams(ft, wt), 2)
        if normalize:
            a = a / a.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
            b = b / b.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
        return 7.0 * ((a - b) ** 2).mean()

    got = catkd_loss(fs, ft, ws, wt, beta=7.0, resolution=2, normalize=normalize)
    expected = plain(ws)
    assert torch.allclose(got, expected, rtol=1e-10)
    (g_got,) = torch.autograd.grad(got, ws)
    (g_exp,) = torch.autograd.grad(expected, ws)
    assert torch.allclose(g_got, g_exp, rtol=1e-8, atol=1e-14)


def test_catkd_reads_the_live_classifier_weights(zoo):
    spec = get_method("catkd")
    ctx = context_for(zoo, "resnet32x4", "resnet8x4", 32)
    distiller = spec.build(ctx, spec.resolve(teacher_arch="resnet32x4", student_arch="resnet8x4"))
    t_out = zoo.teacher_out("resnet32x4", 32)
    with torch.no_grad():
        s_out = ctx.student.forward_features(zoo.x(32))
        before = distiller(s_out, t_out, None)
        expected = 15.0 * F.mse_loss(
            F.adaptive_avg_pool2d(_plain_cams(s_out.stages[-1], ctx.student.classifier.weight), 2),
            F.adaptive_avg_pool2d(_plain_cams(t_out.stages[-1], ctx.teacher.classifier.weight), 2))
        assert torch.allclose(before, expected, rtol=1e-4)
        saved = ctx.student.classifier.weight.clone()
        ctx.student.classifier.weight.mul_(2.0)
        try:
            assert not torch.allclose(distiller(s_out, t_out, None), before)
        finally:
            ctx.student.classifier.weight.copy_(saved)


# ------------------------------------------------------------------------- registry and defaults


def test_registry_entries_and_published_defaults():
    review, cat = get_method("reviewkd"), get_method("catkd")
    assert (review.label, review.kind, cat.label, cat.kind) == ("ReviewKD", "feature", "CAT-KD", "feature")
    d = review.defaults("cifar", "resnet32x4", "resnet8x4")
    assert (d["reviewkd_weight"], d["warmup_epochs"], d["ce_weight"], d["mid_channels"]) == (5.0, 20, 1.0, 0)
    assert review.defaults("cifar", "wrn_40_2", "shufflenetv1")["reviewkd_weight"] == 5.0  # official script
    assert review.defaults("imagenet", "resnet34", "resnet18")["reviewkd_weight"] == 1.0
    d = review.defaults("imagenet", "resnet50", "mobilenetv1")
    assert (d["reviewkd_weight"], d["mid_channels"], d["warmup_epochs"]) == (8.0, 256, 1)
    expected = {
        ("resnet32x4", "resnet8x4"): (15.0, 2, False), ("vgg13", "vgg8"): (4.5, 2, False),
        ("wrn_40_2", "shufflenetv1"): (80.0, 4, True), ("resnet50_cifar", "mobilenetv2"): (40.0, 2, True),
        ("resnet32x4", "shufflenetv1"): (600.0, 4, True), ("vgg13", "mobilenetv2"): (15.0, 2, True),
        ("wrn_40_2", "wrn_40_1"): (1.5, 2, False),
    }
    for (t, s), values in expected.items():
        d = cat.defaults("cifar", t, s)
        assert (d["beta"], d["cam_resolution"], d["normalize"], d["cam_bias"], d["warmup_epochs"]) == \
            (*values, False, 0), (t, s)
    d = cat.defaults("imagenet", "resnet34", "resnet18")
    assert (d["beta"], d["cam_resolution"], d["normalize"]) == (0.5, 4, False)
    with pytest.raises(ValueError, match="cam_resolution"):
        cat.resolve({"cam_resolution": 0})


# ------------------------------------------------------------------------- end to end on digits

QUICK = dict(dataset="digits", imbalance_factor=100, batch_size=64, progress=False, device="cpu")  # bitwise checks: CPU


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("teacher")
    fit(RunConfig(**QUICK, arch="resnet20", epochs=1), run_dir, log=None)
    return run_dir


@pytest.mark.parametrize("method", METHODS)
def test_distils_on_digits_saves_the_distiller_and_resumes_exactly(teacher_dir, tmp_path, method):
    config = RunConfig(**QUICK, role="student", arch="resnet8", method=method, epochs=2, teacher=str(teacher_dir))

    def crash_copy_after_first_epoch(metrics, checkpoint):
        # a copy of the run folder as a run that died right after epoch 1 would have left it
        if metrics["epoch"] == 1:
            shutil.copytree(checkpoint.parent, tmp_path / "resumed")

    straight = fit(config, tmp_path / "straight", callback=crash_copy_after_first_epoch, log=None)
    assert all(math.isfinite(m["train_loss"]) for m in straight.history)
    assert load_checkpoint(tmp_path / "resumed")["epoch"] == 1
    resumed = fit(config, tmp_path / "resumed", log=None)
    assert [m["epoch"] for m in resumed.history] == [1, 2]
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["distiller"].keys() == b["distiller"].keys()
    for name, tensor in a["distiller"].items():
        assert torch.equal(tensor, b["distiller"][name]), name
    n_model_params = sum(1 for _ in create_model("resnet8", NUM_CLASSES).parameters())
    n_optimised = len(a["optimizer"]["param_groups"][0]["params"])
    if method == "reviewkd":
        assert "abfs.0.reduce.0.weight" in a["distiller"] and "abfs.3.project.1.running_var" in a["distiller"]
        assert all(torch.isfinite(t).all() for t in a["distiller"].values() if t.is_floating_point())
        n_distiller_params = sum(1 for k in a["distiller"] if not k.endswith(("running_mean", "running_var",
                                                                              "num_batches_tracked")))
        assert n_optimised == n_model_params + n_distiller_params  # the ABFs are trained with the student
    else:
        assert a["distiller"] == {} and n_optimised == n_model_params


@pytest.mark.parametrize("method", METHODS)
def test_half_precision_features_give_a_float32_loss(zoo, method):
    # under CUDA autocast the engine hands over bfloat16/float16 features: the losses run in float32
    spec = get_method(method)
    ctx = context_for(zoo, "resnet20", "resnet8", 32)
    distiller = spec.build(ctx, spec.resolve())

    def half(o: ModelOutput) -> ModelOutput:
        return ModelOutput(o.logits.bfloat16(), [s.bfloat16() for s in o.stages], o.pooled.bfloat16())

    s_out = half(ctx.student.forward_features(zoo.x(32)))
    loss = distiller(s_out, half(zoo.teacher_out("resnet20", 32)), torch.tensor([0, 1]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in ctx.student.parameters() if p.grad is not None)
