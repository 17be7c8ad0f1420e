"""Small, fast configurations for tests (the defaults are sized for real data), and a spy
on the learning rate each training epoch runs at."""

import math

TEST_SETTINGS: dict[str, dict] = {
    "pop": {},
    "itemknn": {"neighbours": 30},
    "userknn": {"neighbours": 20},
    "content": {},
    "ease": {"l2": 50.0},
    "als": {"factors": 16, "iterations": 10, "regularization": 0.1},
    "bpr": {"factors": 16, "iterations": 100, "learning_rate": 0.05, "regularization": 0.01},
    "multvae": {"hidden": 64, "latent": 16, "epochs": 60, "batch_size": 64, "anneal_steps": 200},
    "cfgan": {"hidden": 64, "epochs": 60, "batch_size": 32, "lr": 1e-3, "lr_d": 1e-3},
    "sasrec": {"max_len": 30, "dim": 32, "epochs": 40, "batch_size": 32, "lr": 3e-3},
    "sasrec-ce": {"max_len": 30, "dim": 32, "epochs": 20, "batch_size": 32, "lr": 3e-3},
    "gru4rec": {"max_len": 30, "dim": 32, "epochs": 10, "batch_size": 32, "lr": 3e-3},
    "bert4rec": {"max_len": 30, "dim": 32, "epochs": 10, "batch_size": 32, "lr": 3e-3},
    "semantic-id": {
        "codebook": 8,
        "rq_epochs": 40,
        "max_len": 20,
        "dim": 32,
        "heads": 2,
        "enc_layers": 1,
        "dec_layers": 1,
        "epochs": 25,
        "batch_size": 64,
        "lr": 3e-3,
    },
    "llm": {
        "lora": False,
        "epochs": 4,
        "samples_per_user": 3,
        "batch_size": 32,
        "lr": 5e-3,
        "beam": 10,
        "prompt_items": 6,
    },
    "biasedmf": {"factors": 8, "epochs": 30, "batch_size": 64, "lr": 1e-2},
    "svdpp": {"factors": 8, "epochs": 30, "batch_size": 64, "lr": 1e-2},
    "nmf": {"factors": 8, "epochs": 30, "batch_size": 64, "lr": 1e-2},
}


def record_rates(monkeypatch, model, epoch_method: str) -> list[float]:
    """Spy on `model.<epoch_method>(data, opt, epoch, ...)`: the returned list gets the
    optimizer's learning rate as each epoch starts."""
    rates: list[float] = []
    real = getattr(model, epoch_method)

    def spy(data, opt, epoch, *rest):
        rates.append(opt.param_groups[0]["lr"])
        return real(data, opt, epoch, *rest)

    monkeypatch.setattr(model, epoch_method, spy)
    return rates


def cosine_rates(lr: float, epochs: int) -> list[float]:
    """A half cosine from `lr` towards 0 over `epochs`, by hand: lr · (1 + cos(π e / n)) / 2."""
    return [lr * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
