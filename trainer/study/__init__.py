"""python -m trainer study: the seed study's claims measured on a checkpoint root (see trainer.study.cli)."""
