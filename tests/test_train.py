"""Population training equals training each model alone with torch.nn and torch.optim."""
import numpy as np
import pytest
import torch

from zoo.architectures import TorchNet, build_spec
from zoo.functional import dropout_mask, population_forward
from zoo.store import STATUS_DIVERGED, STATUS_DONE
from zoo.rng import stream_keys
from zoo.tasks import load_task
from zoo.train import epoch_order, initial_params, noisy_labels, step_key_of, train_population, training_subset

M = 8


@pytest.fixture(scope="module")
def digits():
    return load_task("digits", n_train=300, n_val=97)


@pytest.fixture(scope="module")
def digits_image():
    return load_task("digits", layout="image", n_train=200, n_val=97)


def population_hparams(optimizer: str, **over):
    """Varied hyperparameters in a well-conditioned regime. (Adam at lr 0.07 with beta1 0.03 is
    chaotic: a 1e-7 change of the init moves plain torch's own result by 1e-2 within one epoch,
    so no implementation could be compared there.)"""
    rng = np.random.default_rng(0)
    lr_range, mom_range = ((1e-3, 0.1), (0.0, 0.95)) if optimizer == "sgd" else ((1e-4, 1e-2), (0.5, 0.95))
    hp = {
        "lr": list(np.exp(rng.uniform(*np.log(lr_range), M))),
        "optimizer": [optimizer] * M,
        "momentum": list(rng.uniform(*mom_range, M)),
        "weight_decay": list(rng.uniform(0.0, 1e-2, M)),
        "init_scale": list(rng.uniform(0.5, 2.0, M)),
        "dropout": [0.0] * M,
        "data_fraction": list(rng.uniform(0.3, 1.0, M)),
        "label_noise": list(rng.uniform(0.0, 0.4, M)),
        "batch_size": [16] * M,
        "activation": ["tanh"] * M,
    }
    hp.update(over)
    return hp


def train_alone(spec, task, hp, i, seed, epochs):
    """Model i trained the plain way: a torch.nn module, torch.optim, a loop over batches."""
    net = TorchNet(spec, activation=hp["activation"][i])
    with torch.no_grad():
        for p, init in zip(net.parameters(), initial_params(spec, seed, hp["init_scale"][i])):
            p.copy_(init)
    kind, lr, wd, mom = hp["optimizer"][i], hp["lr"][i], hp["weight_decay"][i], hp["momentum"][i]
    if kind == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=mom, weight_decay=wd)
    elif kind == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(mom, 0.999), weight_decay=wd)
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=(mom, 0.999), weight_decay=wd)
    subset = training_subset(seed, len(task.x_train), hp["data_fraction"][i])
    y = noisy_labels(seed, task.y_train, subset, hp["label_noise"][i], task.num_classes)
    bs = hp["batch_size"][i]
    for epoch in range(1, epochs + 1):
        order = epoch_order(seed, subset, epoch)
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            loss = torch.nn.functional.cross_entropy(net(task.x_train[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


def assert_each_matches_alone(spec, task, hp, seeds, res, epochs):
    """Every model's final weights equal those of the same model trained alone."""
    for i in range(len(seeds)):
        net = train_alone(spec, task, hp, i, seeds[i], epochs)
        for k, p in enumerate(net.state_dict().values()):
            np.testing.assert_allclose(res.params[k][i, -1], p.numpy(), rtol=1e-4, atol=2e-5, err_msg=f"model {i}")


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_population_matches_models_trained_alone(digits, optimizer):
    spec = build_spec("mlp", digits.input_shape, digits.output_dim, hidden=[16, 16], activation="tanh")
    hp = population_hparams(optimizer)
    seeds = list(range(100, 100 + M))
    epochs = 3
    res = train_population(spec, digits, hp, seeds, epochs=epochs, checkpoints=[0, epochs])
    assert (res.status == STATUS_DONE).all()
    for i in range(M):
        net = train_alone(spec, digits, hp, i, seeds[i], epochs)
        for k, (name, p) in enumerate(net.state_dict().items()):
            assert name == spec.params[k].name
            np.testing.assert_allclose(res.params[k][i, -1], p.numpy(), rtol=1e-4, atol=2e-5,
                                       err_msg=f"model {i} {name} ({optimizer})")
        with torch.no_grad():
            acc = (net(digits.x_test).argmax(1) == digits.y_test).float().mean().item()
            subset = training_subset(seeds[i], len(digits.x_train), hp["data_fraction"][i])
            y = noisy_labels(seeds[i], digits.y_train, subset, hp["label_noise"][i], digits.num_classes)[subset]
            out = net(digits.x_train[subset])
            train_loss = torch.nn.functional.cross_entropy(out, y).item()
            train_acc = (out.argmax(1) == y).float().mean().item()
        assert abs(res.metrics["test_acc"][i, -1] - acc) < 1e-6
        # train metrics: on the model's own subset, with its noisy labels
        assert abs(res.metrics["train_acc"][i, -1] - train_acc) < 1e-6
        assert res.metrics["train_loss"][i, -1] == pytest.approx(train_loss, rel=1e-4, abs=1e-5)
        # the stored initialisation is the initialisation
        np.testing.assert_array_equal(res.params[0][i, 0], initial_params(spec, seeds[i], hp["init_scale"][i])[0].numpy())


def test_cnn_population_matches_models_trained_alone(digits_image):
    task = digits_image
    spec = build_spec("cnn", task.input_shape, task.output_dim, channels=[4, 6], kernel=3, stride=2, activation="relu")
    hp = population_hparams("sgd", activation=["relu"] * M)
    seeds = list(range(M))
    res = train_population(spec, task, hp, seeds, epochs=2, checkpoints=[2])
    assert_each_matches_alone(spec, task, hp, seeds, res, 2)


@pytest.mark.parametrize("arch,opts,layout", [("mlp", {"hidden": [8, 7]}, "flat"),
                                              ("cnn", {"channels": [3, 5]}, "image"),
                                              ("siren", {"hidden": [8, 8]}, "flat")])
def test_population_forward_matches_torch_module(arch, opts, layout):
    task = load_task("digits", layout=layout, n_train=100, n_val=50)
    spec = build_spec(arch, task.input_shape, task.output_dim, **opts)
    params = [torch.stack(ps) for ps in zip(*[initial_params(spec, s, 1.0) for s in range(5)])]
    x = task.x_test[:20]
    shared = population_forward(spec, params, x)
    per_model = population_forward(spec, params, x.expand(5, *x.shape))
    for i in range(5):
        net = TorchNet(spec)
        net.load_state_dict({p.name: t[i] for p, t in zip(spec.params, params)})
        with torch.no_grad():
            ref = net(x)
        torch.testing.assert_close(shared[i], ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(per_model[i], ref, rtol=1e-5, atol=1e-5)


def test_diverged_models_are_marked_and_do_not_poison_the_rest(digits):
    spec = build_spec("mlp", digits.input_shape, digits.output_dim, hidden=[16, 16], activation="relu")
    hp = population_hparams("sgd", activation=["relu"] * M)
    hp["lr"][2] = hp["lr"][5] = 1e4  # these blow up
    hp["init_scale"][2] = hp["init_scale"][5] = 30.0
    seeds = list(range(M))
    res = train_population(spec, digits, hp, seeds, epochs=3, checkpoints=[0, 1, 3])
    assert res.status[2] == res.status[5] == STATUS_DIVERGED
    assert res.diverged_epoch[2] >= 1 and res.diverged_epoch[5] >= 1
    assert np.isnan(res.params[0][2, -1]).all() and np.isnan(res.metrics["test_acc"][2, -1])
    assert np.isfinite(res.params[0][2, 0]).all()  # the init before divergence is kept
    keep = [i for i in range(M) if i not in (2, 5)]
    sub = {k: [v[i] for i in keep] for k, v in hp.items()}
    alone = train_population(spec, digits, sub, [seeds[i] for i in keep], epochs=3, checkpoints=[0, 1, 3])
    assert (alone.status == STATUS_DONE).all()
    for k in range(len(spec.params)):
        np.testing.assert_allclose(res.params[k][keep], alone.params[k], rtol=1e-5, atol=1e-6)
    for name in res.metrics:
        np.testing.assert_allclose(res.metrics[name][keep], alone.metrics[name], rtol=1e-5, atol=1e-6)


def test_dropout_masks_depend_only_on_the_model(digits):
    spec = build_spec("mlp", digits.input_shape, digits.output_dim, hidden=[16, 16], activation="relu")
    hp = population_hparams("sgd", activation=["relu"] * M, dropout=[0.0, 0.5] * (M // 2))
    hp["label_noise"] = [0.0] * M
    seeds = [7] * (M - 1) + [8]  # identical models but for dropout, and the last one's seed
    for k in ("lr", "momentum", "weight_decay", "init_scale", "data_fraction"):
        hp[k] = [hp[k][0]] * M
    res = train_population(spec, digits, hp, seeds, epochs=1, checkpoints=[1])
    w = res.params[0][:, -1]
    no_drop = w[0:M - 1:2]
    np.testing.assert_allclose(no_drop, no_drop[:1].repeat(len(no_drop), 0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(w[1], w[0])  # dropout changed the training of the others
    np.testing.assert_allclose(w[1], w[3], rtol=1e-5, atol=1e-6)  # same seed, same masks
    assert not np.allclose(w[M - 1], w[M - 3])  # another seed, other masks (and data order)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_dropout_model_matches_torch_with_the_same_masks(digits, activation):
    """Model i with dropout in a population equals a plain torch module trained with autograd and
    torch.optim.Adam on the same masks (zoo.functional.dropout_mask of its seed)."""
    spec = build_spec("mlp", digits.input_shape, digits.output_dim, hidden=[16, 12], activation=activation)
    hp = population_hparams("adam", activation=[activation] * M, dropout=list(np.linspace(0.05, 0.6, M)))
    seeds = list(range(40, 40 + M))
    epochs = 2
    res = train_population(spec, digits, hp, seeds, epochs=epochs, checkpoints=[epochs])
    act = torch.relu if activation == "relu" else torch.tanh
    for i in (0, 3, M - 1):
        params = [p.clone().requires_grad_(True) for p in initial_params(spec, seeds[i], hp["init_scale"][i])]
        opt = torch.optim.Adam(params, lr=hp["lr"][i], betas=(hp["momentum"][i], 0.999),
                               weight_decay=hp["weight_decay"][i])
        subset = training_subset(seeds[i], len(digits.x_train), hp["data_fraction"][i])
        y = noisy_labels(seeds[i], digits.y_train, subset, hp["label_noise"][i], digits.num_classes)
        keep = torch.tensor([1.0 - hp["dropout"][i]])
        key = stream_keys([seeds[i]], "dropout")
        bs = hp["batch_size"][i]
        for epoch in range(1, epochs + 1):
            order = epoch_order(seeds[i], subset, epoch)
            for step, s in enumerate(range(0, len(order), bs)):
                idx = order[s:s + bs]
                step_key = torch.tensor(step_key_of(epoch, step), dtype=torch.int32)
                h = digits.x_train[idx]
                for layer in range(3):
                    h = h @ params[2 * layer].T + params[2 * layer + 1]
                    if layer < 2:  # the masks of a full batch of bs, cut to this batch
                        m = dropout_mask((1, bs, h.shape[1]), 0, keep, key, step_key, layer)[0, :len(idx)]
                        h = act(h) * m
                loss = torch.nn.functional.cross_entropy(h, y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        for k, p in enumerate(params):
            np.testing.assert_allclose(res.params[k][i, -1], p.detach().numpy(), rtol=1e-4, atol=2e-5,
                                       err_msg=f"model {i} {spec.params[k].name}")


def test_dropout_masks_keep_the_rate_and_compile_to_the_same_draws():
    M, B, H = 6, 64, 32
    keep = torch.tensor([1.0, 0.9, 0.75, 0.5, 0.3, 0.0])
    keys = stream_keys(range(M), "dropout")
    step = torch.tensor(step_key_of(3, 7), dtype=torch.int32)
    m = dropout_mask((M, B, H), 0, keep, keys, step, 1)
    kept = (m > 0).float().mean((1, 2))
    assert kept[0] == 1.0 and kept[-1] == 0.0
    torch.testing.assert_close(kept[1:-1], keep[1:-1], atol=0.03, rtol=0)  # 2,048 draws each
    torch.testing.assert_close(m[m > 0], (1 / keep).view(M, 1, 1).expand(M, B, H)[m > 0])
    other_step = dropout_mask((M, B, H), 0, keep, keys, step + 1, 1)
    other_layer = dropout_mask((M, B, H), 0, keep, keys, step, 0)
    for other in (other_step, other_layer):  # independent draws: agreement as for independent coins
        agree = ((m > 0) == (other > 0)).float().mean((1, 2))[3]
        assert abs(float(agree) - 0.5) < 0.05
    # a model's masks do not depend on the others: model 3 alone draws what it drew in the population
    alone = dropout_mask((1, B, H), 0, keep[3:4], keys[3:4], step, 1)
    torch.testing.assert_close(alone[0], m[3])
    # the CNN layout [B, M, C, S] draws per model too
    conv = dropout_mask((B, M, 4, 9), 1, keep, keys, step, 0)
    conv_alone = dropout_mask((B, 1, 4, 9), 1, keep[2:3], keys[2:3], step, 0)
    torch.testing.assert_close(conv_alone[:, 0], conv[:, 2])
    # as inside the compiled training step: the shape from a tensor, the layer a constant
    compiled = torch.compile(lambda a, *args: dropout_mask(tuple(a.shape), 0, *args, layer=1), dynamic=True)
    try:
        out = compiled(torch.empty(M, B, H), keep, keys, step)
    except Exception as e:  # no C++ compiler here: the eager masks are what every run uses
        pytest.skip(f"torch.compile unavailable: {type(e).__name__}")
    torch.testing.assert_close(out, m, rtol=0, atol=0)


def test_mixed_optimizers_in_one_population(digits):
    """SGD and Adam models interleaved in one population each match their own run."""
    spec = build_spec("mlp", digits.input_shape, digits.output_dim, hidden=[16, 16], activation="tanh")
    sgd, adam = population_hparams("sgd"), population_hparams("adam")
    hp = {k: [(sgd if i % 2 == 0 else adam)[k][i] for i in range(M)] for k in sgd}
    seeds = list(range(M))
    res = train_population(spec, digits, hp, seeds, epochs=2, checkpoints=[2])
    assert_each_matches_alone(spec, digits, hp, seeds, res, 2)


def test_population_rejects_mixed_structural_hparams(digits):
    spec = build_spec("mlp", digits.input_shape, digits.output_dim, hidden=[4])
    hp = population_hparams("sgd")
    hp["activation"] = ["relu", "tanh"] * (M // 2)
    with pytest.raises(ValueError, match="activation"):
        train_population(spec, digits, hp, list(range(M)), epochs=1, checkpoints=[1])


def test_regression_population_trains_on_each_models_noisy_targets():
    """Regression with label noise: model i equals a torch module trained with MSE on its own noisy
    targets (before, the trainer fitted the clean targets and only evaluated the noisy ones)."""
    task = load_task("sine", n_train=300)
    spec = build_spec("mlp", task.input_shape, task.output_dim, hidden=[12, 12], activation="tanh")
    hp = population_hparams("sgd", label_noise=[0.0] + [0.4] * (M - 1))
    seeds = list(range(60, 60 + M))
    res = train_population(spec, task, hp, seeds, epochs=2, checkpoints=[2])
    for i in (0, 1, M - 1):
        net = TorchNet(spec, activation="tanh")
        with torch.no_grad():
            for p, init in zip(net.parameters(), initial_params(spec, seeds[i], hp["init_scale"][i])):
                p.copy_(init)
        opt = torch.optim.SGD(net.parameters(), lr=hp["lr"][i], momentum=hp["momentum"][i],
                              weight_decay=hp["weight_decay"][i])
        subset = training_subset(seeds[i], len(task.x_train), hp["data_fraction"][i])
        y = noisy_labels(seeds[i], task.y_train, subset, hp["label_noise"][i], None)
        assert (i == 0) == torch.equal(y[subset], task.y_train[subset])
        for epoch in (1, 2):
            order = epoch_order(seeds[i], subset, epoch)
            for s in range(0, len(order), hp["batch_size"][i]):
                idx = order[s:s + hp["batch_size"][i]]
                loss = torch.nn.functional.mse_loss(net(task.x_train[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        for k, p in enumerate(net.state_dict().values()):
            np.testing.assert_allclose(res.params[k][i, -1], p.numpy(), rtol=1e-4, atol=2e-5, err_msg=f"model {i}")
        with torch.no_grad():
            train_mse = torch.nn.functional.mse_loss(net(task.x_train[subset]), y[subset]).item()
        assert res.metrics["train_loss"][i, -1] == pytest.approx(train_mse, rel=1e-4, abs=1e-6)
