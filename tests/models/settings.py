"""Small, fast configurations for tests (the defaults are sized for real data)."""

TEST_SETTINGS: dict[str, dict] = {
    "pop": {},
    "itemknn": {"neighbours": 30},
    "userknn": {"neighbours": 20},
    "content": {},
    "ease": {"l2": 50.0},
    "als": {"factors": 16, "iterations": 10, "regularization": 0.1},
    "bpr": {"factors": 16, "iterations": 100, "learning_rate": 0.05, "regularization": 0.01},
    "multvae": {"hidden": 64, "latent": 16, "epochs": 60, "batch_size": 64, "anneal_steps": 200},
    "cfgan": {"hidden": 64, "epochs": 60, "batch_size": 32, "lr_g": 1e-3, "lr_d": 1e-3},
    "sasrec": {"max_len": 30, "dim": 32, "epochs": 40, "batch_size": 32, "lr": 3e-3},
    "sasrec-ce": {"max_len": 30, "dim": 32, "epochs": 20, "batch_size": 32, "lr": 3e-3},
    "biasedmf": {"factors": 8, "epochs": 30, "batch_size": 64, "lr": 1e-2},
    "svdpp": {"factors": 8, "epochs": 30, "batch_size": 64, "lr": 1e-2},
    "nmf": {"factors": 8, "epochs": 30, "batch_size": 64, "lr": 1e-2},
}
