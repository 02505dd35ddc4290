"""Pure log-density, ELBO, marginal-Laplace and profiled-deviance kernels."""
