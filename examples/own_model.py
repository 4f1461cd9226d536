"""STN on your own model and objective: an MLP on scikit-learn's digits, tuning its dropout."""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import stn
from stn.regularizers import dropout

x, y = load_digits(return_X_y=True)
x, y = torch.tensor(x / 16, dtype=torch.float32), torch.tensor(y)
data = {
    "train": (x[:1000], y[:1000]),
    "val": (x[1000:1400], y[1000:1400]),
    "test": (x[1400:], y[1400:]),
}


class MLP(torch.nn.Module):
    def __init__(self, n_hyper):  # STN layers take the batch's hyperparameters as extra input
        super().__init__()
        self.fc1, self.fc2 = stn.STNLinear(64, 128, n_hyper), stn.STNLinear(128, 10, n_hyper)

    def forward(self, x, hb):  # hb["dropout"]: one rate per example, (B,)
        h = torch.relu(self.fc1(x, hb.net_input))
        return self.fc2(dropout(h, hb["dropout"]) if self.training else h, hb.net_input)


class Digits:  # what stn.train needs: the space, the model, batches, losses, an evaluation
    space = stn.Space.of(stn.HParam("dropout", 0.0, 0.9, init=0.05))
    build_model = staticmethod(MLP)

    def train_batches(self, epoch):
        order = torch.randperm(1000, generator=torch.Generator().manual_seed(epoch))
        return [(data["train"][0][i], data["train"][1][i]) for i in order.split(50)]

    def val_batches(self, epoch):
        return [data["val"]]

    def train_loss(self, model, batch, hb):  # the validation loss here is the same objective
        return F.cross_entropy(model(batch[0], hb), batch[1])

    val_loss = train_loss

    def evaluate(self, model, hyper_fn, split):
        logits = model(data[split][0], hyper_fn(len(data[split][0])))
        accuracy = (logits.argmax(1) == data[split][1]).float().mean().item()
        return {"loss": F.cross_entropy(logits, data[split][1]).item(), "metric": accuracy}


config = stn.STNConfig(epochs=10, optimizer="adam", lr=3e-3, hyper_lr=0.03, scale_lr=0.03)
result = stn.train(Digits(), config)
print(
    f"tuned dropout {result.hparams['dropout']:.3f} (from 0.05), "
    f"val loss {result.val_loss:.3f}, test accuracy {result.test_metric:.3f}"
)
