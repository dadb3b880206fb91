"""The model core: what the three model families (prediction, diffusion, hypernetworks) share."""
