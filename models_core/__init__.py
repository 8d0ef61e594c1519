"""Networks, latent-space maths, images and the checkpoint format of facegen.

Depends on torch, torchvision, numpy, Pillow, safetensors and scikit-learn only.
"""

from models_core.checkpoint import Checkpoint, CheckpointError, CheckpointStore, Manifest
from models_core.conv_transpose import ConvTranspose2d, conv_transpose2d
from models_core.dcgan import DCGAN_PRESETS, DCGANConfig, Discriminator, Generator
from models_core.images import ImageDecodeError, decode_image, encode_png, image_grid
from models_core.latent import PcaBasis, interpolation_path, latent_sweep, lerp, sample_prior, slerp
from models_core.losses import discriminator_loss, generator_loss, kl_divergence, vae_loss
from models_core.kinds import MODEL_KINDS, build_model
from models_core.vae import VAE, VAE_PRESETS, Autoencoder, VAEConfig
