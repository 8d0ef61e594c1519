"""Training: prepare CelebA into a packed 64×64 dataset, train AE/VAE/DCGAN (one process or
torchrun), publish versions into a checkpoint store, evaluate and promote them.
`python -m trainer --help` is the entry point."""
