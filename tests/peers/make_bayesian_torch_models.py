"""Train small bayesian-torch models and save them for migration.

Run with PyTorch and bayesian-torch installed:

    python tests/peers/make_bayesian_torch_models.py OUT_DIR

For each model, `OUT_DIR/<name>/` gets `state_dict.pt`
(`torch.save(model.state_dict(), ...)`) and `reference.npz`: channels-first
inputs `x`; the outputs `mean` that bayesian-torch computes at the
posterior mean (every `rho_*` set to -1e4, so that
`sigma = log1p(exp(rho))` is exactly 0 and each layer's own forward pass
uses its `mu_*`); `kl_kernels`, the summed KL of every Bayesian kernel
against the layers' N(0, 1) priors, and `kl_bias_<module>`, each bias', by
bayesian-torch's `kl_div` (a per-weight mean, times the weight count).
"""

import copy
import os
import sys

import numpy as np
import torch
from bayesian_torch import layers as bl
from torch import nn
from torch.nn import functional as F


def _out(result):
    """bayesian-torch layers return `(outputs, kl)`."""
    return result[0] if isinstance(result, tuple) else result


class Net2D(nn.Module):
    """2D Reparameterization / Flipout (grouped), a transposed conv,
    BatchNorm2d, plain Conv2d and Linear, and after the Flatten a
    BatchNorm1d and a LinearFlipout (both indexed by flattened features)."""

    input_shape = (2, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv1 = bl.Conv2dReparameterization(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, momentum=0.5)
        self.conv2 = bl.Conv2dFlipout(4, 4, 3, groups=2)
        self.tconv = bl.ConvTranspose2dReparameterization(4, 3, 2, stride=2)
        self.conv3 = nn.Conv2d(3, 2, 3)
        self.bn1d = nn.BatchNorm1d(2 * 4 * 4, momentum=0.5)
        self.fc1 = bl.LinearFlipout(2 * 4 * 4, 6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x):
        x = F.relu(self.bn(_out(self.conv1(x))))
        x = F.max_pool2d(_out(self.conv2(x)), 2)
        x = self.conv3(F.relu(_out(self.tconv(x))))
        x = self.bn1d(torch.flatten(x, 1))
        return self.fc2(F.relu(_out(self.fc1(x))))


# bayesian-torch 0.5's ConvTranspose*Flipout layers build their prior
# buffers in the regular convolution's layout, so that their KL fails unless
# in_channels == out_channels: the transposed Flipout layers below keep the
# channel count.


class Net1D(nn.Module):
    """1D Reparameterization, a strided transposed Flipout, a Flatten."""

    input_shape = (2, 6)

    def __init__(self):
        super().__init__()
        self.conv = bl.Conv1dReparameterization(2, 3, 3)
        self.tconv = bl.ConvTranspose1dFlipout(3, 3, 3, stride=2)
        self.fc = bl.LinearReparameterization(3 * 9, 3)

    def forward(self, x):
        x = F.relu(_out(self.conv(x)))
        x = _out(self.tconv(x))
        return _out(self.fc(torch.flatten(x, 1)))


class Net3D(nn.Module):
    """3D Flipout, transposed Reparameterization and Flipout."""

    input_shape = (1, 3, 3, 3)

    def __init__(self):
        super().__init__()
        self.conv = bl.Conv3dFlipout(1, 2, 2)
        self.tconv1 = bl.ConvTranspose3dReparameterization(2, 2, 2)
        self.tconv2 = bl.ConvTranspose3dFlipout(2, 2, 2, stride=2)
        self.fc = nn.Linear(2 * 6 * 6 * 6, 2)

    def forward(self, x):
        x = F.relu(_out(self.conv(x)))
        x = _out(self.tconv2(F.relu(_out(self.tconv1(x)))))
        return self.fc(torch.flatten(x, 1))


MODELS = {"net2d": Net2D, "net1d": Net1D, "net3d": Net3D}


def _kl_sums(model):
    """`(kernel KL summed over layers, {module: bias KL})`."""
    kernels, biases = 0.0, {}
    for prefix, module in model.named_modules():
        mu = getattr(module, "mu_kernel", getattr(module, "mu_weight", None))
        if mu is None:
            continue
        rho = getattr(module, "rho_kernel", getattr(module, "rho_weight", None))
        sigma = torch.log1p(torch.exp(rho))
        prior = (module.prior_weight_mu, module.prior_weight_sigma)
        kernels += float(module.kl_div(mu, sigma, *prior)) * mu.numel()
        if module.mu_bias is not None:
            sigma = torch.log1p(torch.exp(module.rho_bias))
            prior = (module.prior_bias_mu, module.prior_bias_sigma)
            kl = module.kl_div(module.mu_bias, sigma, *prior)
            biases[f"kl_bias_{prefix}"] = float(kl) * module.mu_bias.numel()
    return kernels, biases


def _kl(model):
    return sum(
        _out(module.kl_loss()) if hasattr(module, "kl_loss") else 0.0
        for module in model.modules()
    )


def main(out_dir):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    for name, cls in MODELS.items():
        model = cls()
        x_train = torch.randn(16, *cls.input_shape)
        y_train = torch.randn(16, *model(x_train[:2]).shape[1:])
        optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
        model.train()
        for step in range(4):
            batch = slice(4 * step, 4 * step + 4)
            loss = F.mse_loss(model(x_train[batch]), y_train[batch])
            loss = loss + _kl(model) / 16
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        folder = os.path.join(out_dir, name)
        os.makedirs(folder)
        torch.save(model.state_dict(), os.path.join(folder, "state_dict.pt"))
        at_mean = copy.deepcopy(model)
        with torch.no_grad():
            for key, parameter in at_mean.named_parameters():
                if key.rsplit(".", 1)[-1].startswith("rho_"):
                    parameter.fill_(-1e4)
            x = torch.randn(5, *cls.input_shape)
            mean = at_mean(x)
        with torch.no_grad():
            kernels, biases = _kl_sums(model)
        np.savez(
            os.path.join(folder, "reference.npz"),
            x=x.numpy(),
            mean=mean.numpy(),
            kl_kernels=kernels,
            **biases,
        )


if __name__ == "__main__":
    main(sys.argv[1])
