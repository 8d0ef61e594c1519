"""One training step per model kind. The loop calls `train_step(x)` and knows nothing else of them."""

import contextlib

import torch
import torch.nn as nn

from models_core.checkpoint import Checkpoint
from models_core.dcgan import Discriminator, Generator, discriminator_extras
from models_core.losses import discriminator_loss, generator_loss, reconstruction_loss, vae_loss
from models_core.kinds import build_model
from trainer.augment import diff_augment
from trainer.config import TrainConfig
from trainer.distributed import Dist, all_reduce_gradients, broadcast_module


def clip(module: nn.Module, max_norm: float) -> None:
    if max_norm > 0:
        nn.utils.clip_grad_norm_(module.parameters(), max_norm)


def adam(module: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    # The fused kernel: one pass over each tensor instead of ~10; on the CPU the default per-tensor
    # loop took several times longer (README, Benchmarks).
    return torch.optim.Adam(module.parameters(), lr=cfg.lr, betas=cfg.betas, fused=True)


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """load_state_dict, with each state tensor laid out in memory as its parameter is. The fused
    kernel walks both as flat memory: a channels_last weight beside a contiguous exp_avg (as every
    tensor comes back from disk) would pair the wrong elements, and the resumed run would drift."""
    fused = opt.defaults.get("fused")
    opt.load_state_dict(state)
    for group in opt.param_groups:
        group["fused"] = fused  # a state saved by the per-tensor loop (runs before it was fused) resumes fused
    for p, values in opt.state.items():
        for k, v in values.items():
            if k == "step" and fused:
                values[k] = v.to(device=p.device, dtype=torch.float32)  # where the fused kernel reads it
            elif torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                values[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def prepare(net: nn.Module, cfg: TrainConfig, device: torch.device, ranks: Dist) -> tuple[nn.Module, nn.Module]:
    """(the network itself, the callable the step runs: compiled when asked)."""
    net = net.to(device, memory_format=torch.channels_last)
    broadcast_module(net, ranks)
    return net, (torch.compile(net) if cfg.compile else net)


class AutoencoderTask:
    """AE: MSE. VAE: MSE + beta·KL with the reparameterised sample."""

    def __init__(self, cfg: TrainConfig, device: torch.device, autocast, ranks: Dist):
        self.cfg, self.autocast, self.ranks = cfg, autocast, ranks
        self.net, self.run = prepare(build_model(cfg.model, cfg.network_config), cfg, device, ranks)
        self.opt = adam(self.net, cfg)
        self.is_vae = cfg.model == "vae"
        self.metric_legend = (
            "metrics: loss = squared error summed over each image's pixels + beta_kl·kl (per image); "
            "recon = per-pixel MSE on the [-1, 1] scale; kl = nats per image" if self.is_vae else
            "metrics: loss = recon = per-pixel MSE on the [-1, 1] scale")

    @property
    def inference_net(self) -> nn.Module:
        return self.net

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt": self.opt}

    def publish_extras(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {}

    def start_from(self, ckpt: Checkpoint) -> str:
        """Take a published version's weights (fine-tuning); what was taken, for the log."""
        self.net.load_state_dict(ckpt.model.state_dict())
        return "its network"

    def train_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.autocast():
            if self.is_vae:
                recon, mu, logvar = self.run(x)
                loss, rec, kl = vae_loss(x, recon.float(), mu.float(), logvar.float(), self.cfg.beta_kl)
            else:
                rec = loss = reconstruction_loss(x, self.run(x).float())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        all_reduce_gradients(self.net, self.ranks)
        clip(self.net, self.cfg.grad_clip)
        self.opt.step()
        metrics = {"loss": loss.detach(), "recon": rec.detach()}
        if self.is_vae:
            metrics["kl"] = kl.detach()
        return metrics


class GANTask:
    """DCGAN with the non-saturating loss: one D update, then one G update on the same fakes."""

    def __init__(self, cfg: TrainConfig, device: torch.device, autocast, ranks: Dist):
        self.cfg, self.autocast, self.ranks, self.device = cfg, autocast, ranks, device
        self.G, self.run_G = prepare(Generator(cfg.network_config), cfg, device, ranks)
        self.D, self.run_D = prepare(Discriminator(cfg.network_config), cfg, device, ranks)
        self.opt_G, self.opt_D = adam(self.G, cfg), adam(self.D, cfg)
        self.view = diff_augment if cfg.augment else (lambda x: x)  # what D sees of an image
        self.metric_legend = ("metrics: loss_D, loss_G = the non-saturating losses (nats per image); "
                              "D_x, D_G_z = the discriminator's mean probability of 'real'")

    @property
    def inference_net(self) -> nn.Module:
        return self.G

    def modules(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_G": self.opt_G, "opt_D": self.opt_D}

    def publish_extras(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The discriminator, published beside G: its features are the perceptual loss that
        projects real faces into G's latent space (the service's /project)."""
        return discriminator_extras(self.D.state_dict(), dtype)

    def start_from(self, ckpt: Checkpoint) -> str:
        """G from the version's (published, so averaged) generator, D from its discriminator where it has one."""
        self.G.load_state_dict(ckpt.model.state_dict())
        if ckpt.discriminator is None:
            return "its generator (it has no discriminator: D starts from scratch)"
        self.D.load_state_dict(ckpt.discriminator.state_dict())
        return "its generator and discriminator"

    def train_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        z = torch.randn(real.shape[0], self.G.latent_dim, device=self.device)
        with self.autocast():
            fake = self.run_G(z)

        # Update D: push D(x) up and D(G(z)) down.
        with self.autocast():
            real_logits, fake_logits = self.run_D(self.view(real)).float(), self.run_D(self.view(fake.detach())).float()
        loss_D = discriminator_loss(real_logits, fake_logits)
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        all_reduce_gradients(self.D, self.ranks)
        clip(self.D, self.cfg.grad_clip)
        self.opt_D.step()

        # Update G: make D call the same fakes real. D's weights are frozen for this backward.
        self.D.requires_grad_(False)
        with self.autocast():
            loss_G = generator_loss(self.run_D(self.view(fake)).float())
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.D.requires_grad_(True)
        all_reduce_gradients(self.G, self.ranks)
        clip(self.G, self.cfg.grad_clip)
        self.opt_G.step()

        return {
            "loss_D": loss_D.detach(),
            "loss_G": loss_G.detach(),
            "D_x": torch.sigmoid(real_logits.detach()).mean(),
            "D_G_z": torch.sigmoid(fake_logits.detach()).mean(),
        }


def make_task(cfg: TrainConfig, device: torch.device, autocast=contextlib.nullcontext, ranks: Dist = Dist()):
    return GANTask(cfg, device, autocast, ranks) if cfg.model == "gan" else AutoencoderTask(cfg, device, autocast, ranks)
