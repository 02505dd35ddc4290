# Exact profile-likelihood interval limits by root-finding, to settle where lme4's
# confint(method = "profile") (ζ on a grid, interpolated by splines) differs from
# bayesglmm's root-find by more than the parity tolerance.  For each parameter of the ML fit
# of Reaction ~ Days + (Days | Subject): ζ(c) = sign(c − ĉ)·√(d_c − d̂), d_c the ML deviance
# minimised with the parameter fixed at c — variance parameters on lme4's own profile scale
# (devfun2: SDs, correlation, σ; minimised by bobyqa), fixed effects by refitting with the
# coefficient moved into an offset — and uniroot(ζ(c) ∓ qnorm(0.975)).
#   Rscript tests/reference/lme4_profile_rootfind.R /work/shared/data > tests/reference/lme4_profile_rootfind.json
suppressMessages({library(lme4); library(jsonlite); library(minqa)})
dir <- commandArgs(trailingOnly = TRUE)[1]
sleep <- read.csv(file.path(dir, "sleepstudy.csv"), colClasses = c(Subject = "factor"))
ctl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 2e-4, rhoend = 2e-11))
m1 <- lmer(Reaction ~ Days + (Days | Subject), sleep, REML = FALSE, control = ctl)
dhat <- deviance(m1)
z <- qnorm(0.975)
dd <- lme4:::devfun2(m1, useSc = TRUE, signames = FALSE)
opt <- attr(dd, "optimum")[1:4]  # sd1, cor, sd2, sigma (then the fixed effects)
lower <- c(0, -1, 0, 0)
upper <- c(Inf, 1, Inf, Inf)
zeta_var <- function(j, c) {
  f <- function(x) { p <- opt; p[j] <- c; p[-j] <- x; dd(p) }
  r <- bobyqa(opt[-j], f, lower = lower[-j], upper = upper[-j],
              control = list(rhobeg = 1e-3, rhoend = 1e-12, maxfun = 1e5))
  sign(c - opt[j]) * sqrt(max(r$fval - dhat, 0))
}
X <- getME(m1, "X")
zeta_fe <- function(j, c) {
  off <- c * X[, j]
  Xr <- X[, -j, drop = FALSE]
  f <- lmer(Reaction ~ 0 + Xr + (Days | Subject) + offset(off), sleep, REML = FALSE,
            control = ctl)
  sign(c - fixef(m1)[j]) * sqrt(max(deviance(f) - dhat, 0))
}
ci <- confint(m1, method = "profile", oldNames = FALSE)
root <- function(fz, est, lim) uniroot(function(c) fz(c) - sign(lim - est) * z,
                                       sort(c(est, lim + 0.5 * (lim - est))), tol = 1e-10)$root
out <- list()
for (j in 1:4) out[[rownames(ci)[j]]] <- c(root(function(c) zeta_var(j, c), opt[j], ci[j, 1]),
                                           root(function(c) zeta_var(j, c), opt[j], ci[j, 2]))
for (j in 1:2) out[[rownames(ci)[4 + j]]] <- c(
  root(function(c) zeta_fe(j, c), fixef(m1)[j], ci[4 + j, 1]),
  root(function(c) zeta_fe(j, c), fixef(m1)[j], ci[4 + j, 2]))
cat(toJSON(list(software = paste("lme4", packageVersion("lme4")),
                model = "Reaction ~ Days + (Days | Subject), ML",
                spline = list(names = rownames(ci), lower = unname(ci[, 1]),
                              upper = unname(ci[, 2])),
                rootfind = list(names = names(out), lower = unname(sapply(out, `[`, 1)),
                                upper = unname(sapply(out, `[`, 2)))),
           digits = NA, auto_unbox = TRUE, pretty = TRUE))
cat("\n")
